"""Running an experiment: start and end, the runner, the run folder (schema, reader, writer), files, processes."""

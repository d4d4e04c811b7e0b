"""Running an experiment: the start, the runner, the run folder (schema, reader, writer), files, provenance, processes."""

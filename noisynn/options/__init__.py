"""Command-line plumbing shared by every experiment: parser, flag groups and types, plugins, script boundary."""

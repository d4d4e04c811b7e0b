"""Command-line plumbing shared by every experiment: the parser, flag groups and types, plugins, the script boundary."""

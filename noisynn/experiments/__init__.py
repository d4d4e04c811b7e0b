"""One module per experiment, each with ``add_args(parser)``, ``trial``-level code and ``main(argv)``."""

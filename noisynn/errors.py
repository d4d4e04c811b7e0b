"""The one exception type the command line turns into a one-line error and exit code 2."""


class NoisyNNError(Exception):
    """A problem with the user's input (unknown name, bad number, missing file, no network).

    Scripts print ``error: <message>`` on stderr and exit with code 2; library callers get
    an ordinary exception they can catch.
    """


class UnknownNameError(NoisyNNError, ValueError):
    """An unknown registered name (e.g. a noise type) in a call the original toolkit made raise ValueError.

    Both a ``ValueError`` (what the original's callers catch) and a ``NoisyNNError`` (one line,
    exit 2 at the script boundary). Not raised inside argparse ``type=`` functions, where a
    ValueError would be reworded by argparse.
    """

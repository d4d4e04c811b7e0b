"""The one exception type the command line turns into a one-line error and exit code 2."""


class NoisyNNError(Exception):
    """A problem with the user's input (unknown name, bad number, missing file, no network).

    Scripts print ``error: <message>`` on stderr and exit with code 2; library callers get
    an ordinary exception they can catch.
    """

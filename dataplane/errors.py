"""Exceptions of the data plane: one for DPDK failures, one for user input."""


class NvgwError(Exception):
    """Base of every error the gateway reports to its user as one line."""


class ConfigError(NvgwError):
    """The configuration or policy given by the user is wrong."""


class DataplaneError(NvgwError):
    """A DPDK call failed: `what` we were doing, the errno and its text."""

    def __init__(self, what, errno, text):
        super().__init__(f"{what}: {text}")
        self.what = what
        self.errno = errno
        self.text = text

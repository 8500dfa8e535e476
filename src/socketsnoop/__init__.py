"""socket-snoop: live TCP connection monitor for Linux, on eBPF."""

__version__ = "0.1.0"

"""Bytes and durations in the units people read: '512 B', '5.7 MiB'; '300 us', '212 ms', '1.20 s', '5.2 min'."""


def human_bytes(n):
    """1023 -> '1023 B', 5976883 -> '5.7 MiB' (powers of 1024, one decimal)."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        n /= 1024
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def _three(value, unit):
    """Three significant digits: 12.5 ms, 212 ms, 1.20 s."""
    if value >= 99.95:
        return f"{value:.0f} {unit}"
    if value >= 9.995:
        return f"{value:.1f} {unit}"
    return f"{value:.2f} {unit}"


def human_us(us):
    """Microseconds in words; None -> '-'. 300 -> '300 us', 212025 -> '212 ms', 1200000 -> '1.20 s'."""
    if us is None:
        return "-"
    if us < 1000:
        return f"{us} us"
    if us < 999_500:
        return _three(us / 1000, "ms")
    if us < 59_950_000:
        return _three(us / 1e6, "s")
    if us < 3_597_000_000:
        return _three(us / 6e7, "min")
    return _three(us / 3.6e9, "h")

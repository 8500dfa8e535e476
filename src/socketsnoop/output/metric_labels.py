"""What --metrics-labels may name and how it is parsed: apart from output/metrics.py, so that the options
can be read without importing prometheus_client, which only --metrics needs."""

LABELS = ("comm", "unit", "container")  # what --metrics-labels may name
DEFAULT_LABEL_LIMIT = 100
# the value of the label past its cap: no process can have it (comm_label gives at most COMM_LEN - 1 characters
# unless it holds a '\\', an escape's)
OTHER = "other (past the cap)"


def parse_labels(values, default_limit=DEFAULT_LABEL_LIMIT):
    """['comm:50,unit'] -> {'comm': 50, 'unit': default_limit}; ValueError with the reason."""
    out = {}
    for value in values:
        for item in str(value).split(","):
            name, _, cap = item.strip().partition(":")
            if name not in LABELS:
                raise ValueError(f"unknown label {name!r}: one of {', '.join(LABELS)}, e.g. comm or comm:50")
            if cap:
                try:
                    limit = int(cap)
                except ValueError:
                    limit = 0
                if not 1 <= limit <= 100000:
                    raise ValueError(f"{item.strip()!r}: the cap is a whole number from 1 to 100000")
            else:
                limit = default_limit
            out[name] = limit
    return out

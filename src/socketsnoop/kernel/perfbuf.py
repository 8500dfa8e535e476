"""libbpf's perf buffer, for kernels without BPF ring buffers (--buffer perf): a Python callback per event."""

import ctypes
import errno

from ..errors import SnoopError
from .libbpf import PERF_LOST_FN, PERF_SAMPLE_FN, Libbpf, libbpf_error


class PerfBuffer:
    """libbpf's perf buffer, for kernels without BPF ring buffers (--buffer perf)."""

    def __init__(self, map_fd, page_cnt, on_sample, on_lost):
        self.bpf = Libbpf.get()
        self.error = None

        def sample(ctx, cpu, data, size):
            if self.error is None:
                try:
                    on_sample(ctypes.string_at(data, size))
                except BaseException as e:  # raised again from poll(): never lost inside the C callback
                    self.error = e

        self._sample = PERF_SAMPLE_FN(sample)
        self._lost = PERF_LOST_FN(lambda ctx, cpu, n: on_lost(n)) if on_lost else PERF_LOST_FN()  # NULL: none
        ctypes.set_errno(0)
        self.pb = self.bpf.perf_new(map_fd, page_cnt, self._sample, self._lost, None, None)
        if not self.pb:
            raise SnoopError(libbpf_error("cannot create the perf buffer")[1])

    def _raise(self):
        if self.error is not None:
            e, self.error = self.error, None
            raise e

    def poll(self, timeout_ms):
        rc = self.bpf.perf_poll(self.pb, timeout_ms)
        self._raise()
        if rc < 0 and -rc != errno.EINTR:
            raise SnoopError(libbpf_error("perf buffer poll failed", rc)[1])

    def consume(self):
        self.bpf.perf_consume(self.pb)
        self._raise()

    def close(self):
        if self.pb:
            self.bpf.perf_free(self.pb)
            self.pb = None

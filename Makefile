# socket-snoop developer targets. The compiled BPF object is committed, so
# installing needs none of this; `make bpf` rebuilds it with the pinned clang.
CLANG ?= clang-16
LLVM_STRIP ?= llvm-strip-16
BPF_DIR := src/socketsnoop/kernel/bpf
BPF_OBJ := $(BPF_DIR)/socketsnoop.bpf.o
BPF_CFLAGS := -target bpf -D__TARGET_ARCH_x86 -O2 -g -Wall -Werror -fno-ident
# compile in DIR, with no path of this machine in the object (so CI can rebuild it byte for byte)
compile = cd $(1) && $(CLANG) $(BPF_CFLAGS) -ffile-prefix-map=$$(pwd)=. -c socketsnoop.bpf.c -o socketsnoop.bpf.o \
	&& $(LLVM_STRIP) -g socketsnoop.bpf.o

.PHONY: bpf bpf-check test install vmlinux

bpf: $(BPF_OBJ)

$(BPF_OBJ): $(BPF_DIR)/socketsnoop.bpf.c $(BPF_DIR)/socketsnoop.h $(BPF_DIR)/vmlinux.h
	$(call compile,$(BPF_DIR))

# Fails if the committed object is not what the source builds to.
bpf-check:
	@tmp=$$(mktemp -d) && cp $(BPF_DIR)/socketsnoop.bpf.c $(BPF_DIR)/socketsnoop.h $(BPF_DIR)/vmlinux.h $$tmp/ && \
	($(call compile,$$tmp)) && \
	if cmp -s $$tmp/socketsnoop.bpf.o $(BPF_OBJ); then echo "bpf-check: $(BPF_OBJ) matches its source"; rm -rf $$tmp; \
	else echo "bpf-check: $(BPF_OBJ) is stale: run 'make bpf' and commit it"; rm -rf $$tmp; exit 1; fi

# vmlinux.h is committed (pinned): regenerate only on purpose.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $(BPF_DIR)/vmlinux.h

test:
	./tests/run

install:
	./install.sh

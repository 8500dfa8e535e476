# socket-snoop developer targets. The compiled BPF object is committed, so
# installing needs none of this; `make bpf` rebuilds it with the pinned clang.
CLANG ?= clang-16
LLVM_STRIP ?= llvm-strip-16
BPF_DIR := src/socketsnoop/kernel/bpf
BPF_OBJ := $(BPF_DIR)/socketsnoop.bpf.o
# the program's source: socketsnoop.bpf.c and its headers (vmlinux.h among them)
BPF_SRC := $(BPF_DIR)/socketsnoop.bpf.c $(wildcard $(BPF_DIR)/*.h)
BPF_CFLAGS := -target bpf -D__TARGET_ARCH_x86 -O2 -g -Wall -Werror -fno-ident
# the scale tests' reference counter (tests/kernel/test_kernel_scale.py), committed as the monitor's object is
TEST_BPF_DIR := tests/bpf
TEST_BPF_OBJ := $(TEST_BPF_DIR)/port_counter.bpf.o
# compile in DIR, with no path of this machine in the object (so CI can rebuild it byte for byte)
compile = cd $(1) && $(CLANG) $(BPF_CFLAGS) -ffile-prefix-map=$$(pwd)=. -c socketsnoop.bpf.c -o socketsnoop.bpf.o \
	&& $(LLVM_STRIP) -g socketsnoop.bpf.o
# the same for the test's program, in the tree at ROOT (vmlinux.h found by a relative path, the same everywhere)
compile_test = cd $(1)/$(TEST_BPF_DIR) && $(CLANG) $(BPF_CFLAGS) -I ../../$(BPF_DIR) -ffile-prefix-map=$$(pwd)=. \
	-c port_counter.bpf.c -o port_counter.bpf.o && $(LLVM_STRIP) -g port_counter.bpf.o

.PHONY: bpf bpf-check test install vmlinux man completion

bpf: $(BPF_OBJ) $(TEST_BPF_OBJ)

$(BPF_OBJ): $(BPF_SRC)
	$(call compile,$(BPF_DIR))

$(TEST_BPF_OBJ): $(TEST_BPF_DIR)/port_counter.bpf.c $(BPF_DIR)/vmlinux.h
	$(call compile_test,.)

# Fails if the committed object is not what the source builds to.
bpf-check:
	@tmp=$$(mktemp -d) && cp $(BPF_SRC) $$tmp/ && \
	($(call compile,$$tmp)) && \
	if cmp -s $$tmp/socketsnoop.bpf.o $(BPF_OBJ); then echo "bpf-check: $(BPF_OBJ) matches its source"; rm -rf $$tmp; \
	else echo "bpf-check: $(BPF_OBJ) is stale: run 'make bpf' and commit it"; rm -rf $$tmp; exit 1; fi
	@tmp=$$(mktemp -d) && mkdir -p $$tmp/$(TEST_BPF_DIR) $$tmp/$(BPF_DIR) && \
	cp $(TEST_BPF_DIR)/port_counter.bpf.c $$tmp/$(TEST_BPF_DIR)/ && cp $(BPF_DIR)/vmlinux.h $$tmp/$(BPF_DIR)/ && \
	($(call compile_test,$$tmp)) && \
	if cmp -s $$tmp/$(TEST_BPF_DIR)/port_counter.bpf.o $(TEST_BPF_OBJ); then echo "bpf-check: $(TEST_BPF_OBJ) matches its source"; rm -rf $$tmp; \
	else echo "bpf-check: $(TEST_BPF_OBJ) is stale: run 'make bpf' and commit it"; rm -rf $$tmp; exit 1; fi

# vmlinux.h is committed (pinned): regenerate only on purpose.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > $(BPF_DIR)/vmlinux.h

test:
	./tests/run

install:
	./install.sh

# the man page and bash completion, made from the option declarations (man ./socket-snoop.1)
man:
	PYTHONPATH=src python3 -m socketsnoop config --man > socket-snoop.1

completion:
	PYTHONPATH=src python3 -m socketsnoop config --bash-completion > socket-snoop.bash

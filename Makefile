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

# -- packages (docs/packaging.md) ------------------------------------------------------------------------------
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
DEB_TREE := build/deb/socket-snoop-$(VERSION)
# Debian's own tools only: PATH without a user's Python (pyenv, a venv) that pybuild would otherwise find
DEB_PATH := /usr/sbin:/usr/bin:/sbin:/bin

.PHONY: deb image

# dist/socket-snoop_VERSION_amd64.deb, built from a copy of the tree (dpkg-buildpackage writes beside it)
deb:
	@v=$$(dpkg-parsechangelog -l debian/changelog -S Version) && [ "$$v" = "$(VERSION)" ] || \
	{ echo "make deb: debian/changelog is at $$v, pyproject.toml at $(VERSION): add a changelog entry"; exit 1; }
	rm -rf build/deb && mkdir -p $(DEB_TREE) dist
	tar -cf - --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude=__pycache__ \
		--exclude=./tests/packaging/cache --exclude=./tests/kernels/cache . | tar -xf - -C $(DEB_TREE)
	cd $(DEB_TREE) && env PATH=$(DEB_PATH) dpkg-buildpackage -us -uc -b
	mv build/deb/socket-snoop_$(VERSION)_*.deb dist/
	@echo "make deb: dist/$$(cd dist && ls socket-snoop_$(VERSION)_*.deb)"

# socket-snoop:VERSION in the local podman storage (deploy/image/build: mmdebstrap, then podman import)
image: deb
	deploy/image/build dist/socket-snoop_$(VERSION)_amd64.deb $(VERSION)

# Builds and installs model_context for C, C++, Go and Julia users (what cargo-c would do):
#
#   make                                   # cargo build --release
#   make install PREFIX=/usr/local         # library, header, pkg-config files
#   make install PREFIX=$HOME/.local PROFILE=debug DESTDIR=/tmp/stage NO_BUILD=1
#   make uninstall PREFIX=/usr/local
#
# Installs, under $(DESTDIR)$(PREFIX):
#   lib/libmodel_context.so.$(VERSION)     the shared library, SONAME $(SONAME)
#   lib/$(SONAME) -> libmodel_context.so.$(VERSION), lib/libmodel_context.so -> $(SONAME)
#   lib/libmodel_context.a                 the static library
#   include/model_context.h
#   lib/pkgconfig/model_context.pc         pkg-config --cflags --libs model_context
#   lib/pkgconfig/model_context-static.pc  the same, linking libmodel_context.a
# The shared library keeps the RUNPATH to the libtorch it was built against (LD_LIBRARY_PATH
# overrides it); the .pc files record that libtorch for static linking.

PREFIX ?= /usr/local
DESTDIR ?=
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
# release or debug: which cargo build is installed. NO_BUILD=1 installs what is built as is.
PROFILE ?= release
NO_BUILD ?=
CARGO ?= cargo
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

VERSION := $(shell sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)
MAJOR := $(word 1,$(subst ., ,$(VERSION)))
MINOR := $(word 2,$(subst ., ,$(VERSION)))
# As build.rs: MAJOR.MINOR while the ABI is unstable (0.x), MAJOR from 1.0 on.
SONAME := libmodel_context.so.$(if $(filter 0,$(MAJOR)),0.$(MINOR),$(MAJOR))
CARGO_PROFILE := $(if $(filter debug,$(PROFILE)),dev,$(PROFILE))
BUILT := $(TARGET_DIR)/$(PROFILE)

# Read from the built library once it exists (recursively expanded on purpose).
LIBTORCH_LIB = $(shell readelf -d $(BUILT)/libmodel_context.so | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p' | cut -d: -f1)
STATIC_LIBS = -L$${libtorchdir} -Wl,-rpath,$${libtorchdir} $(if $(wildcard $(LIBTORCH_LIB)/libtorch_cuda.so),-Wl$(,)--push-state$(,)--no-as-needed$(,)-ltorch_cuda$(,)--pop-state) -ltorch_cpu -ltorch -lc10 -lgomp -lstdc++ -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
, := ,

.PHONY: all build install uninstall check-soname print-soname

all: build

build:
	$(CARGO) build --profile $(CARGO_PROFILE) --lib

check-soname: $(if $(NO_BUILD),,build)
	@got=$$(readelf -d $(BUILT)/libmodel_context.so | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p'); \
	if [ "$$got" != "$(SONAME)" ]; then \
	  echo "$(BUILT)/libmodel_context.so has SONAME '$$got', expected $(SONAME)" >&2; exit 1; fi

print-soname:
	@echo $(SONAME)

define pc_file
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' -e 's|@LIBTORCH_LIB@|$(LIBTORCH_LIB)|g' \
	    -e 's|@STATIC_LIBS@|$(STATIC_LIBS)|g' packaging/$(1).in > $(DESTDIR)$(PKGCONFIGDIR)/$(1)
endef

install: check-soname
	@test -n "$(LIBTORCH_LIB)" || { echo "no RUNPATH to libtorch in $(BUILT)/libmodel_context.so" >&2; exit 1; }
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 755 $(BUILT)/libmodel_context.so $(DESTDIR)$(LIBDIR)/libmodel_context.so.$(VERSION)
	ln -sfn libmodel_context.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libmodel_context.so
	install -m 644 $(BUILT)/libmodel_context.a $(DESTDIR)$(LIBDIR)/libmodel_context.a
	install -m 644 include/model_context.h $(DESTDIR)$(INCLUDEDIR)/model_context.h
	$(call pc_file,model_context.pc)
	$(call pc_file,model_context-static.pc)

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libmodel_context.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR)/libmodel_context.so $(DESTDIR)$(LIBDIR)/libmodel_context.a \
	      $(DESTDIR)$(INCLUDEDIR)/model_context.h \
	      $(DESTDIR)$(PKGCONFIGDIR)/model_context.pc $(DESTDIR)$(PKGCONFIGDIR)/model_context-static.pc

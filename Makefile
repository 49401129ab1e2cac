# notify: PGXS build.
#
#   make && make install      build and install the extension
#   make installcheck         pg_regress suites against a running server
#   make unit                 plain-C unit tests of the providers and crypto (ASan)
#   make tap                  TAP tests (clusters with notify preloaded + simulators)
#   make bench                the throughput/latency benchmark (test/bench)
#
# test/run.sh runs everything on throwaway clusters; it is the test command.

EXTENSION = notify
MODULE_big = notify
DATA = notify--1.0.sql
PGFILEDESC = "notify - transactional notifications from PostgreSQL"

OBJS = \
	src/notify.o \
	src/shmem.o \
	src/launcher.o \
	src/maintenance.o \
	src/worker.o \
	src/sqlfuncs.o \
	src/render.o \
	src/engine.o \
	src/providers.o \
	src/crypto.o \
	src/apns.o \
	src/fcm.o \
	src/webpush.o \
	src/twilio.o \
	src/smtp.o \
	src/webhook.o \
	src/send.o

REGRESS = setup contacts templates send providers render ops features
REGRESS_OPTS = --outputdir=test/regress-out
ISOLATION = idempotency_race
ISOLATION_OPTS = --outputdir=test/isolation-out

PG_CPPFLAGS = -Isrc $(shell pkg-config --cflags libcurl jansson openssl 2>/dev/null)
PG_CFLAGS = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Werror=implicit-function-declaration
SHLIB_LINK = -lcurl -ljansson -lssl -lcrypto -lm

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: unit tap bench format

unit:
	$(MAKE) -C test/unit check

tap:
	PATH="$(bindir):$$PATH" PG_REGRESS="$(pgxsdir)/src/test/regress/pg_regress" \
	PERL5LIB="$(pgxsdir)/src/test/perl:$(CURDIR)/test/perl" \
	NOTIFY_ROOT="$(CURDIR)" \
	prove --timer -v $(PROVE_FLAGS) test/t/$(or $(T),*).pl

bench:
	$(MAKE) -C test/bench run

format:
	clang-format -i src/*.c src/*.h test/unit/*.c

# PGXS tracks no header dependencies; every object depends on every header.
$(OBJS): $(wildcard src/*.h)

#!/usr/bin/env python3
"""Runs the Piko integration tests (stdlib unittest only).

  python3 tests/integration/run.py --bin build/bin/piko [--sanitized] [-k pattern]...

-k works like unittest's: a substring (or fnmatch pattern) of the test id
`module.Class.test_method`; several -k are OR-ed. --sanitized: the binary is
an ASan/UBSan build: timeouts are scaled up and any sanitizer report in a
process's stderr fails the test. Exit status: 0 all passed, 1 otherwise.
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import harness  # noqa: E402


class TimedResult(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.durations = {}
        self.outcomes = {}
        self._t0 = {}

    def startTest(self, test):
        self._t0[test.id()] = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        self.durations[test.id()] = time.monotonic() - self._t0.get(test.id(), time.monotonic())
        super().stopTest(test)

    def _set(self, test, what):
        # the worst outcome wins (a cleanup error after a pass counts)
        rank = {"ok": 0, "skip": 0, "xfail": 0, "FAIL": 2, "ERROR": 2}
        prev = self.outcomes.get(test.id())
        if prev is None or rank[what] >= rank[prev]:
            self.outcomes[test.id()] = what

    def addSuccess(self, test):
        self._set(test, "ok")
        super().addSuccess(test)

    def addFailure(self, test, err):
        self._set(test, "FAIL")
        super().addFailure(test, err)

    def addError(self, test, err):
        self._set(test, "ERROR")
        super().addError(test, err)

    def addSubTest(self, test, subtest, err):
        if err is not None:
            self._set(test, "FAIL" if issubclass(err[0], test.failureException) else "ERROR")
        super().addSubTest(test, subtest, err)

    def addSkip(self, test, reason):
        self._set(test, "skip")
        super().addSkip(test, reason)

    def addExpectedFailure(self, test, err):
        self._set(test, "xfail")
        super().addExpectedFailure(test, err)


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, help="path of the piko binary")
    ap.add_argument("--sanitized", action="store_true",
                    help="ASan/UBSan build: longer timeouts, fail on sanitizer reports")
    ap.add_argument("-k", dest="patterns", action="append", default=[],
                    help="only tests whose id matches (substring or fnmatch pattern)")
    ap.add_argument("--timeout-scale", type=float, default=None,
                    help="multiply every timeout (default 1, or 4 with --sanitized)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the temp dirs (process logs) of failed tests")
    ap.add_argument("--piko-peer", help="the real Piko binary (hack/peers.sh), for test_interop")
    ap.add_argument("--sdk-peer", help="the Go SDK test program (hack/peers.sh), for test_interop")
    ap.add_argument("--require-peers", action="store_true",
                    help="fail (not skip) the interop tests when a peer is not given")
    ap.add_argument("-x", "--failfast", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the selected tests and exit")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()

    binary = os.path.abspath(args.bin)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        print("run.py: %s is not an executable file" % binary, file=sys.stderr)
        return 2

    harness.configure(binary, sanitized=args.sanitized, scale=args.timeout_scale,
                      keep_logs=args.keep_logs, piko_peer=args.piko_peer,
                      sdk_peer=args.sdk_peer, require_peers=args.require_peers)
    os.environ["PIKO_BIN"] = binary
    if args.sanitized:
        os.environ["PIKO_SANITIZED"] = "1"

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if "*" in p else "*%s*" % p for p in args.patterns]
    suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    tests = list(iter_tests(suite))
    if args.list:
        for t in tests:
            print(t.id())
        return 0
    if not tests:
        print("run.py: no tests selected", file=sys.stderr)
        return 1

    print("piko integration tests: %d tests, binary %s%s, timeout scale %g"
          % (len(tests), binary, " (sanitized)" if args.sanitized else "",
             harness.CONFIG.scale), flush=True)
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=1 if args.quiet else 2,
                                     resultclass=TimedResult, failfast=args.failfast,
                                     buffer=False)
    t0 = time.monotonic()
    result = runner.run(suite)
    elapsed = time.monotonic() - t0

    print("\n===== summary =====")
    for tid in sorted(result.outcomes):
        print("%-6s %6.1fs  %s" % (result.outcomes[tid], result.durations.get(tid, 0.0), tid))
    n_fail = sum(1 for v in result.outcomes.values() if v in ("FAIL", "ERROR"))
    n_ok = sum(1 for v in result.outcomes.values() if v == "ok")
    n_skip = sum(1 for v in result.outcomes.values() if v == "skip")
    print("%d passed, %d failed, %d skipped, %.1fs" % (n_ok, n_fail, n_skip, elapsed))
    ok = result.wasSuccessful() and n_fail == 0 and result.testsRun > 0
    print("RESULT: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Every complete program in the documentation builds and runs against the demo checkpoint.

A fenced block whose info string is `c program` or `go program` (README.md, docs/*.md) is a
whole program: it is written to a temporary folder, compiled (C: the compiler warns as an error,
against the header and library given; Go: a module that requires the binding through a replace
directive, linked through pkg-config) and run with the demo checkpoint as its only argument. It
must exit 0. Other fenced blocks are fragments and are not run.

    python tests/docs_programs.py LIBDIR DEMO_DIR

LIBDIR holds libmodel_context.so (for Go, PKG_CONFIG_PATH must find model_context.pc).
"""
import glob
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = re.compile(r"^```(c|go) program\n(.*?)^```$", re.M | re.S)


def programs():
    """[(file, line, language, source)] of every program block."""
    out = []
    for path in [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]:
        with open(path) as f:
            text = f.read()
        for m in BLOCK.finditer(text):
            out.append((os.path.relpath(path, ROOT), text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)))
    return out


def run(cmd, cwd, what, env=None):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        sys.exit(f"docs: {what} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r.stdout


def build_and_run(lang, source, libdir, demo, work):
    if lang == "c":
        src = os.path.join(work, "program.c")
        with open(src, "w") as f:
            f.write(source)
        exe = os.path.join(work, "program")
        run(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", os.path.join(ROOT, "include"), src,
             "-o", exe, "-L", libdir, "-lmodel_context", f"-Wl,-rpath,{libdir}"], work, "compiling")
        return run([exe, demo], work, "running")
    with open(os.path.join(work, "main.go"), "w") as f:
        f.write(source)
    binding = os.path.join(ROOT, "bindings", "go")
    with open(os.path.join(work, "go.mod"), "w") as f:
        f.write(f"module docsprogram\n\ngo 1.19\n\nrequire model_context/bindings/go v0.0.0\n\n"
                f"replace model_context/bindings/go => {binding}\n")
    env = dict(os.environ, GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED="1",
               CGO_LDFLAGS=f"-Wl,-rpath,{libdir}")
    run(["go", "vet", "."], work, "go vet", env)
    run(["go", "build", "-o", "program", "."], work, "go build", env)
    return run([os.path.join(work, "program"), demo], work, "running", env)


def main():
    libdir, demo = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    found = programs()
    langs = {lang for _, _, lang, _ in found}
    if langs != {"c", "go"}:
        sys.exit(f"docs: expected C and Go program blocks, found {sorted(langs)}")
    for path, line, lang, source in found:
        with tempfile.TemporaryDirectory() as work:
            out = build_and_run(lang, source, libdir, demo, work)
        print(f"docs: {path}:{line} ({lang}) ok: {out.strip().splitlines()[-1] if out.strip() else ''}")
    print(f"docs: {len(found)} programs built and ran")


if __name__ == "__main__":
    main()

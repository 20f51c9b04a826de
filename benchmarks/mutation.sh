#!/usr/bin/env bash
# Mutation testing of the regularizers (handlers/) against the handler tests, with mutmut 3: every
# small change mutmut makes to a handler module (an operator, a constant, an argument, a key) is
# run against the tests that cover it; a mutant that no test fails "survived".
#
#     pip install mutmut && bash benchmarks/mutation.sh [WORKDIR]
#
# It mutates a copy of the committed tree in WORKDIR (default: a new temporary folder), leaving the
# repository alone, and prints the counts and the surviving mutants by function. The modules that
# hold no method (the registry, the run context, the shared pretrained-feature pass, the class
# statistics, the diagnostics, the training log) are left out: their own tests are elsewhere.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
command -v mutmut >/dev/null || { echo "error: mutmut is not installed: pip install mutmut" >&2; exit 2; }
work=${1:-$(mktemp -d)}
mkdir -p "$work"
rm -rf "$work/adarand" "$work/mutants"
git -C "$repo" archive --prefix=adarand/ HEAD | tar -x -C "$work"
tests="conftest.py test_handler_steps.py test_baselines.py test_random_features.py test_adarand_math.py test_core_tuning.py test_uot.py"
mkdir "$work/adarand/tests_handlers"
for t in $tests; do cp "$work/adarand/tests/$t" "$work/adarand/tests_handlers/"; done
cat > "$work/pyproject.toml" <<'EOF'
[tool.mutmut]
source_paths = ["adarand/handlers/"]
also_copy = ["adarand/"]
tests_dir = ["adarand/tests_handlers/"]
do_not_mutate = ["*/class_statistics.py", "*/diagnostics.py", "*/features.py", "*/frozen.py", "*/registry.py",
                 "*/context.py", "*/training_log.py", "*/finetune.py", "*/__init__.py"]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]
EOF
cd "$work"
# the package is imported from the mutated copy (mutants/ comes first on the path), one thread a worker
OMP_NUM_THREADS=1 mutmut run --max-children "${JOBS:-2}" > mutmut.log 2>&1 || { tail -20 mutmut.log >&2; exit 1; }
mutmut results --all true > results.txt 2>/dev/null
echo "mutants in $work (mutmut results, mutmut show NAME):"
sed 's/.*: //' results.txt | sort | uniq -c
echo "surviving, by function:"
grep ': survived' results.txt | sed 's/__mutmut_[0-9]*:.*//; s/^ *//' | sort | uniq -c | sort -rn

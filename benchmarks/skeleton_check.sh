#!/usr/bin/env bash
# Fresh-clone acceptance check of the walking skeleton: the README's two commands,
# a cached re-run, a DVC experiment on the prune sparsity, validation exit codes and
# the MLflow lineage. Usage: benchmarks/skeleton_check.sh [DEST_DIR]
set -euo pipefail
src=$(git rev-parse --show-toplevel)
dst=${1:-$(mktemp -d)/carp}
git clone -q "$src" "$dst"
cd "$dst"
export PATH="$dst/.venv/bin:$PATH" HF_HUB_OFFLINE=1 DVC_NO_ANALYTICS=1
unset PYTHONDONTWRITEBYTECODE  # as users run it
secs() { local t0=$1; echo $(( $(date +%s) - t0 )); }

t=$(date +%s); make install > install.log 2>&1; echo "install: $(secs "$t") s"
t=$(date +%s); make demo 2>&1 | tee demo.log | tail -16; echo "make demo (installed): $(secs "$t") s"
t=$(date +%s); dvc repro > repro2.log 2>&1; echo "cached dvc repro: $(secs "$t") s ($(tail -1 repro2.log))"
echo "dvc status after the cached repro: $(dvc status)"

carp validate params.yaml > /dev/null && echo "carp validate params.yaml: exit 0"
sed 's/sparsity: 0.5/sparsity: 1.5/; s/method: random/method: randm/; s/data: select/data: prune/' \
  params.yaml > broken.yaml
set +e; carp validate broken.yaml 2> broken.err; rc=$?; set -e
echo "carp validate broken.yaml: exit $rc"; cat broken.err
carp compile params.yaml --check && echo "compile --check: exit 0"
cp dvc.yaml dvc.yaml.bak && echo "# stale" >> dvc.yaml
set +e; carp compile params.yaml --check 2>/dev/null; rc=$?; set -e
mv dvc.yaml.bak dvc.yaml; echo "compile --check on a stale dvc.yaml: exit $rc"

python - <<'PY'
import mlflow
mlflow.set_tracking_uri("sqlite:///mlflow.db")
df = mlflow.search_runs(search_all_experiments=True)
par = df[df["tags.carp.role"] == "parent"]
kids = df[df["tags.carp.role"] == "stage"]
print(f"mlflow: {len(par)} parent run(s); children: {sorted(kids['tags.mlflow.runName'])}")
print("children linked to the parent:", set(kids["tags.mlflow.parentRunId"]) == set(par["run_id"]))
print("children with output fingerprint, git commit, decl hash:",
      int(kids[["tags.carp.output_fingerprint", "tags.carp.git_commit",
                "tags.carp.decl_hash"]].notna().all(axis=1).sum()), "of", len(kids))
PY

t=$(date +%s); dvc exp run -S stages.prune.sparsity=0.6 > exp.log 2>&1
echo "dvc exp run -S stages.prune.sparsity=0.6: $(secs "$t") s"
grep -E "Running stage|didn't change" exp.log
echo "dvc status after the experiment (bytecode written): $(dvc status)"

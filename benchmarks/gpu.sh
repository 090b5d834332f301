#!/usr/bin/env bash
# One prepared GPU session (about 4 minutes on an H100/H200): the evaluation of
# the bundled model on 200 UTKFace test images and the 1024-px speed figures.
# Needs EVAL_DIR (a folder of HR images, scripts/make_eval_subset.py) and OUT.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
: "${OUT:=gpu-out}" "${EVAL_DIR:=eval-200}"
mkdir -p "$OUT" /tmp/ev
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
E="python3 -m pulse_sr.cli eval $EVAL_DIR --labels utkface --quiet --no-niqe --device cuda"
{ time $E --out /tmp/ev/x8 --scale 8 --runs 1 --batch 200; } 2>&1 | tail -4
{ time $E --out /tmp/ev/x4 --scale 4 --runs 1 --batch 200; } 2>&1 | tail -4
{ time $E --out /tmp/ev/x8full --scale 8 --runs 5 --batch 100 \
    --degrade gaussian:25,gaussian:50,motion:100,saltpepper:0.05; } 2>&1 | tail -4
tar czf "$OUT/eval.tgz" -C /tmp/ev --exclude=images .
for b in 1 4 8; do python3 benchmarks/step_time.py --device cuda --steps 8 --batch $b; done
python3 benchmarks/step_time.py --device cuda --steps 8 --nchw
python3 benchmarks/time_to_eps.py --device cuda --n 5

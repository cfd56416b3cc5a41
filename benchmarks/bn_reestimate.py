"""Diagnostic (issue 24): does re-estimating batch-norm statistics on the clean unlabelled images recover ACC?

Usage: python benchmarks/bn_reestimate.py RUN_DIR/cleansed.pt TEACHER_NAME TARGET  (realscale cache layout)
"""
import sys, torch
from bcu_gui.core.models import load_model
from bcu_gui.core.data import load_unlabeled
from bcu_gui.core.evaluation import load_eval_sets, Evaluator
from bcu_gui.core.devices import plan_compute
torch.set_num_threads(1)
C = "/root/.cache/bcu-bench/realscale"
ckpt, name, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = load_model(ckpt)
plan = plan_compute("cpu", "fp32")
sets = load_eval_sets(f"{C}/eval/clean-7500", f"{C}/eval/{name}/triggered", target, m.input_size, m.num_classes)
ev = Evaluator(sets, m.normalization, plan)
net = m.module
print("as saved", ev.measure(net))
unl = load_unlabeled(f"{C}/defense-2500", m.input_size).images
for mod in net.modules():
    if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
        mod.reset_running_stats(); mod.momentum = None
net.train()
with torch.no_grad():
    for i in range(0, len(unl), 250):
        x = (unl[i:i+250].float() / 255 - ev.mean) / ev.std
        net(x)
net.eval()
print("bn re-estimated on clean unlabelled", ev.measure(net))

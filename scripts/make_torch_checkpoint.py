#!/usr/bin/env python3
"""Write a small PyTorch checkpoint laid out like the reference's released ones, for the tests of
`hrm convert`: a pickled state_dict (torch.save, zip format) whose keys carry the `_orig_mod.model.`
prefixes of a torch.compile'd loss head, H_init/L_init stored in bfloat16 (the reference's forward
dtype), an `all_config.yaml` beside it as the reference writes one, and `expected.safetensors`
with the same tensors under the normalised keys for the test to compare against.

    python scripts/make_torch_checkpoint.py OUT_DIR [--peer PATH]

Dev-only: the outputs are committed under crates/hrm-cli/tests/fixtures/torch-ckpt/.
"""
import argparse, importlib.util, os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))

YAML = """arch:
  H_cycles: 3
  H_layers: 1
  L_cycles: 2
  L_layers: 2
  expansion: 4
  halt_exploration_prob: 0.1
  halt_max_steps: 5
  hidden_size: 32
  loss:
    loss_type: stablemax_cross_entropy
    name: losses@ACTLossHead
  name: hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1
  num_heads: 2
  pos_encodings: rope
  puzzle_emb_ndim: 32
beta1: 0.9
beta2: 0.95
checkpoint_every_eval: true
checkpoint_path: checkpoints/Sudoku-extreme-1k-aug-1000 ACT-torch/HierarchicalReasoningModel_ACTV1 tiny-test
data_path: data/sudoku-extreme-1k-aug-1000
epochs: 20000
eval_interval: 2000
eval_save_outputs: []
global_batch_size: 8
lr: 7.0e-05
lr_min_ratio: 1.0
lr_warmup_steps: 2000
project_name: Sudoku-extreme-1k-aug-1000 ACT-torch
puzzle_emb_lr: 7.0e-05
puzzle_emb_weight_decay: 1.0
run_name: HierarchicalReasoningModel_ACTV1 tiny-test
seed: 0
weight_decay: 1.0
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--peer", default=os.path.join(HERE, "..", "..", "shared", "peers", "torch_hrm.py"))
    args = ap.parse_args()
    spec = importlib.util.spec_from_file_location("torch_hrm", args.peer)
    P = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(P)
    torch.manual_seed(3)
    cfg = P.HRMConfig(batch_size=8, seq_len=81, vocab_size=11, num_puzzle_identifiers=1, puzzle_emb_ndim=32,
                      H_cycles=3, L_cycles=2, H_layers=1, L_layers=2, hidden_size=32, expansion=4.0,
                      num_heads=2, halt_max_steps=5, forward_dtype="bfloat16")
    model = P.HRM(cfg)
    with torch.no_grad():
        model.inner.puzzle_emb.weights.normal_(0, 0.1)
    sd = {f"_orig_mod.model.{k}": v.clone() for k, v in model.state_dict().items()}
    os.makedirs(args.out_dir, exist_ok=True)
    torch.save(sd, os.path.join(args.out_dir, "step_26040"))
    with open(os.path.join(args.out_dir, "all_config.yaml"), "w") as f:
        f.write(YAML)
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()},
              os.path.join(args.out_dir, "expected.safetensors"))
    print("dtypes:", {k: str(v.dtype) for k, v in sd.items() if "init" in k})


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Write a small PyTorch checkpoint laid out like the reference's released ones, for the tests of
`hrm convert`: a pickled state_dict (torch.save, zip format) whose keys carry the `_orig_mod.model.`
prefixes of a torch.compile'd loss head, H_init/L_init stored in bfloat16 (the reference's forward
dtype), an `all_config.yaml` beside it as the reference writes one, and `expected.safetensors`
with the same tensors under the normalised keys for the test to compare against.

    python scripts/make_torch_checkpoint.py OUT_DIR [--peer PATH]
    python scripts/make_torch_checkpoint.py --trm OUT_DIR

--trm writes a tiny TRM (TinyRecursiveModels' pretrain.py layout: hidden 32, 2 heads, 2 mlp_t blocks, no
positional encoding, a 2-position puzzle prefix, seq_len 9, 3 puzzle ids), built with the TRM peer
(scripts/torch_trm_peer.py), with TRM's arch block in all_config.yaml, dumped as pretrain.py does
(yaml.dump of the config, keys sorted).

Dev-only: the outputs are committed under crates/hrm-cli/tests/fixtures/torch-ckpt/ (HRM) and
crates/hrm-cli/tests/fixtures/torch-ckpt-trm/ (TRM).
"""
import argparse, importlib.util, os

import torch
import yaml
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


# TRM's all_config.yaml (what pretrain.py dumps for a Sudoku mlp_t run, made tiny); seq_len comes from
# the data set, so the converter has to infer it from the mlp_t weights
TRM_CONFIG = dict(
    arch=dict(H_cycles=2, H_layers=0, L_cycles=2, L_layers=2, expansion=4, forward_dtype="bfloat16",
              halt_exploration_prob=0.1, halt_max_steps=16, hidden_size=32,
              loss=dict(loss_type="stablemax_cross_entropy", name="losses@ACTLossHead"), mlp_t=True,
              name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1", no_ACT_continue=True, num_heads=2,
              pos_encodings="none", puzzle_emb_len=2, puzzle_emb_ndim=32),
    beta1=0.9, beta2=0.95, checkpoint_every_eval=True,
    checkpoint_path="checkpoints/Sudoku-extreme-1k-aug-1000-ACT-torch/pretrain_mlp_t_sudoku tiny-test",
    data_paths=["data/sudoku-extreme-1k-aug-1000"], data_paths_test=[], ema=True, ema_rate=0.999, epochs=50000,
    eval_interval=5000, eval_save_outputs=[], evaluators=[], freeze_weights=False, global_batch_size=8,
    load_checkpoint=None, lr=1.0e-4, lr_min_ratio=1.0, lr_warmup_steps=2000, min_eval_interval=0,
    project_name="Sudoku-extreme-1k-aug-1000-ACT-torch", puzzle_emb_lr=1.0e-4, puzzle_emb_weight_decay=1.0,
    run_name="pretrain_mlp_t_sudoku tiny-test", seed=0, weight_decay=1.0)


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def hrm_model(peer):
    P = load_module("torch_hrm", peer)
    torch.manual_seed(3)
    cfg = P.HRMConfig(batch_size=8, seq_len=81, vocab_size=11, num_puzzle_identifiers=1, puzzle_emb_ndim=32,
                      H_cycles=3, L_cycles=2, H_layers=1, L_layers=2, hidden_size=32, expansion=4.0,
                      num_heads=2, halt_max_steps=5, forward_dtype="bfloat16")
    return P.HRM(cfg), YAML, "step_26040"


def trm_model(peer):
    os.environ.setdefault("TORCH_HRM_PEER", peer)
    P = load_module("torch_trm_peer", os.path.join(HERE, "torch_trm_peer.py"))
    torch.manual_seed(4)
    a = {k: v for k, v in TRM_CONFIG["arch"].items() if k not in ("loss", "name")}
    cfg = P.TRMConfig(batch_size=TRM_CONFIG["global_batch_size"], seq_len=9, vocab_size=11, num_puzzle_identifiers=3,
                      **{**a, "expansion": float(a["expansion"])})
    return P.TRM(cfg), yaml.dump(TRM_CONFIG), "step_1302"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--peer", default=os.path.join(HERE, "..", "..", "shared", "peers", "torch_hrm.py"))
    ap.add_argument("--trm", action="store_true", help="a TRM checkpoint (mlp_t) instead of an HRM one")
    args = ap.parse_args()
    model, config_yaml, name = (trm_model if args.trm else hrm_model)(args.peer)
    with torch.no_grad():
        model.inner.puzzle_emb.weights.normal_(0, 0.1)
    sd = {f"_orig_mod.model.{k}": v.clone() for k, v in model.state_dict().items()}
    os.makedirs(args.out_dir, exist_ok=True)
    torch.save(sd, os.path.join(args.out_dir, name))
    with open(os.path.join(args.out_dir, "all_config.yaml"), "w") as f:
        f.write(config_yaml)
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()},
              os.path.join(args.out_dir, "expected.safetensors"))
    print("dtypes:", {k: str(v.dtype) for k, v in sd.items() if "init" in k})
    print("keys:", sorted(sd))


if __name__ == "__main__":
    main()

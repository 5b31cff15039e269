"""fastdstn.integrations.huggingface against the real library: SelfTuning's steps inside transformers' Trainer
on a tiny GPT-2 with dict batches (input_ids, attention_mask, labels), its logs, checkpoints (λ, ρ and the three
optimizers in optimizer.pt) and resume."""
import os

import pytest
import torch
import torch.nn.functional as F

from fastdstn import Hyper, HyperSpace, SelfTuning, convert

transformers = pytest.importorskip("transformers")
from fastdstn.integrations.huggingface import SelfTuningTrainer  # noqa: E402

BATCH, LENGTH, VOCAB = 4, 8, 20


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        mask = torch.ones(LENGTH, dtype=torch.long)
        mask[LENGTH - i % 3:] = 0
        return {"input_ids": self.ids[i], "attention_mask": mask, "labels": self.ids[i]}


def lm_loss(outputs, labels):
    return F.cross_entropy(outputs.logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())


def trainer(out_dir, max_steps):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=8, n_layer=1, n_head=2)
    space = HyperSpace([Hyper("attn", 0.1, 0.0, 0.9)])
    model = convert(transformers.GPT2LMHeadModel(config), space, dropout={"transformer.h.0.attn": "attn"})
    method = SelfTuning(model, space, "delta", loss_fn=lm_loss)
    args = transformers.TrainingArguments(output_dir=str(out_dir), max_steps=max_steps,
                                          per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH, save_steps=3, logging_steps=1,
                                          report_to=[], use_cpu=True, eval_strategy="no", max_grad_norm=0.0)
    return SelfTuningTrainer(method, args=args, train_dataset=Tokens(24, 1), eval_dataset=Tokens(8, 2),
                             train_steps=2, optimizer_options=dict(lr=0.05, hyper_lr=0.05))


def test_the_trainer_trains_logs_checkpoints_and_resumes(tmp_path):
    first = trainer(tmp_path, max_steps=6)
    lam = first.method.space.lam.detach().clone()
    first.train()
    assert first.state.global_step == 6
    assert not torch.equal(first.method.space.lam.detach(), lam), "the hyper steps moved λ"
    logged = {k for row in first.state.log_history for k in row}
    assert {"loss", "hyper_val_loss", "hyper/attn", "sigma/attn"} <= logged
    saved = torch.load(os.path.join(tmp_path, "checkpoint-6", "optimizer.pt"), weights_only=False)
    torch.testing.assert_close(saved["space"]["lam"], first.method.space.lam.detach())
    assert set(saved["optimizers"]) == {"general", "response", "hyper"}
    assert "eval_loss" in first.evaluate()

    restored = trainer(tmp_path, max_steps=6)       # resumed at its end: the checkpoint's λ and ρ, no new step
    restored.train(resume_from_checkpoint=True)
    torch.testing.assert_close(restored.method.space.lam.detach(), saved["space"]["lam"], rtol=0, atol=0)
    assert restored.stn_optimizers.hyper.state_dict()["state"], "the hyper optimizer's Adam moments came back"

    resumed = trainer(tmp_path, max_steps=8)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8
    assert not torch.equal(resumed.method.space.lam.detach(), lam)


def test_the_trainer_takes_the_model_from_the_method():
    with pytest.raises(TypeError, match=r"method: expected a fastdstn.SelfTuning, received Linear"):
        SelfTuningTrainer(torch.nn.Linear(2, 2))

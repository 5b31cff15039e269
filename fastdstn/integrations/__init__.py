"""fastdstn inside other training loops: `fastdstn.integrations.lightning` (PyTorch Lightning's LightningModule)
and `fastdstn.integrations.huggingface` (transformers' Trainer). Each module imports its library; fastdstn itself
does not need them. Install them as extras: pip install 'fastdstn[lightning]' or 'fastdstn[huggingface]'."""

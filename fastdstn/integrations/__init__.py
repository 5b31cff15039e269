"""fastdstn inside other training loops: `fastdstn.integrations.lightning` (PyTorch Lightning). Each module imports
its library; fastdstn itself does not need it."""

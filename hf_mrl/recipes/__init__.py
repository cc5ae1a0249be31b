"""What the scripts, the CLI and the demo run: the training recipes (`training`), the demo, the analyses. Not part
of the modeling API; built on `hf_mrl.training`, `hf_mrl.evaluation` and `hf_mrl.hub`."""

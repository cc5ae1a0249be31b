"""What travels with a checkpoint saved `trust_remote_code_ready`: the configs, the models, their losses and
kernels, `encode`, the input and file checks. Flat modules with single-dot imports only (a test checks it): the
export copies them beside `config.json`, where they run without hf_mrl installed.

Nothing is imported here, so that importing one of these modules stays cheap."""

"""Where model files come from: the registry of named and local models (``registry``),
``models install`` for raters that ship in part packages (``install``), LoRA merges for CPUs
(``lora_merge``), adapter folders and their checks (``adapters``) and probe folders
(``probe``)."""

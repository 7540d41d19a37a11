"""LoRA zoos: per condition (a task, a dataset), a LoRA adapter fine-tuned on a frozen pretrained model, its last
steps kept as dense checkpoints. Image tasks on a timm backbone (tasks, backbone) and text tasks on a BERT-style
model (text); every family, the styles of :mod:`workbench.systems.cond_pdiff.style.zoo` included, fine-tunes and
collects through one engine (engine)."""

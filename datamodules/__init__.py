"""LightningDataModules: generic image+caption folders and HF datasets, Kvasir-VQA / MEDVQA-GI, ROCOv2, synthetic."""

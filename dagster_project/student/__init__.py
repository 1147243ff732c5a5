"""The student below the train stage: its data (rows with named columns, the prompt format), answer-swap
augmentation, batches, the model, the trainer and its checkpoints."""

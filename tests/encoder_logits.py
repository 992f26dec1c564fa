"""A sentence classifier's logits on a split, in the dataset's order; imports no plugin code,
so a process with stock fairseq alone can run it (tests/test_encoder.py)."""
import torch


def logits(model, task, split="valid", head="sentence_classification_head", batch=32):
    task.load_dataset(split)
    dataset = task.dataset(split)
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch):
            sample = dataset.collater([dataset[i] for i in range(start, min(start + batch, len(dataset)))])
            out.append(model(**sample["net_input"], features_only=True, classification_head_name=head)[0])
    return torch.cat(out)

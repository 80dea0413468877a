"""The course's three fine-tuning mistakes, reproduced on purpose, each only when asked for:

(a) evaluation without `model.eval()` (`evaluate.eval_mode: false`): every BatchNorm normalises
    with the statistics of the test batch at hand (and updates its running statistics), every
    dropout drops: `without_eval` below;
(b) `param.requirse_grad = False`, which froze nothing (`models.<name>.requirse_grad: true`): the
    whole network in train mode and back-propagated, the optimiser given the head alone
    (models.transfer.TransferModel's `head_only`);
(c) the abrupt head, 1,280 → 2 or 2,048 → 2 in one Linear layer (`models.<name>.head: []`).

params.recipes.Params.mistakes names each one in effect, for the check stage; the defaults reproduce none.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.models import inputs
from pipeline.runtime.device import Compute
from pipeline.runtime.tensors import Split, normalize

SEED = 0  # the shuffled order and dropout's masks of an evaluation without eval mode


def without_eval(
    model: nn.Module,
    split: Split,
    batch_size: int,
    *,
    order: str,
    compute: Compute,
    seed: int = SEED,
    tta: bool = False,
) -> torch.Tensor:
    """Class probabilities (N, classes), float32 on the CPU, in the split's order, as the course's
    evaluation computed them: every module in train mode (a frozen part too: the course froze nothing),
    no gradients, the photos in `order` (split, shuffled or sorted by class) and batches of
    `batch_size` (a last batch of one joins the one before: BatchNorm cannot normalise one image).
    The running statistics the batches overwrite are put back afterwards, so the model's other
    pictures (Grad-CAM) show the model as trained. `tta`: each batch's mirror image is predicted
    after it, as a batch of its own (with its own statistics), and the two probabilities averaged."""
    n = len(split)
    labels = split.labels.cpu()
    if order == "shuffled":
        sequence = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    elif order == "sorted":
        sequence = torch.sort(
            labels, stable=True
        ).indices  # all of the first class, then the next: name order within each
    else:
        sequence = torch.arange(n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    modes = {module: module.training for module in model.modules()}
    for module in model.modules():
        module.training = True  # not model.train(): TransferModel would keep its frozen parts in eval mode
    torch.manual_seed(seed)  # dropout's masks
    normalization = inputs.of(model)
    found = []
    try:
        with torch.no_grad(), compute.autocast():
            for start, stop in zip(starts, [*starts[1:], n]):
                rows = sequence[start:stop]
                x = split.images[rows.to(split.device)]
                proba = torch.softmax(model(normalize(x, normalization, compute.format)).float(), dim=1)
                if tta:
                    proba = (
                        proba
                        + torch.softmax(model(normalize(x.flip(-1), normalization, compute.format)).float(), dim=1)
                    ) / 2
                found.append(proba.cpu())
    finally:
        model.load_state_dict(saved)
        for module, mode in modes.items():
            module.training = mode
    out = torch.empty(n, found[0].shape[1])
    out[sequence[: sum(len(f) for f in found)]] = torch.cat(found)  # back into the split's order
    return out

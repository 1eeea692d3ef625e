"""Self-training on confident pseudo-labels (FixMatch, Sohn et al., 2020): where the network
is confident about a target image as given, its prediction becomes that image's label, which a
strongly augmented view of the image must then predict. The target's predictions are first
aligned with the source's class distribution (AdaMatch, Berthelot et al., 2022), so that
pseudo-labels cannot all collapse onto the few classes an untrained network favours. The bar
is FixMatch's fixed confidence, not AdaMatch's share of the source batch's: early in training
that share let nearly every target image through while the source was not yet learned, and
the pseudo-labels set the network back (on 80 labelled digits, source accuracy 54% -> 27%).
The loss's weight ramps up (`adaptation.ramp`).

The strong view is FixMatch's: RandAugment's photometric operations and a Cutout
(`trainer.augment.colour_augment`), then contrastive pretraining's warp and noise
(`trainer.augment.augment`). Its defaults are the papers' and the same on every pair of
domains; `invert`, which would encode digits-m's shift (strokes darker than their background),
is not among them.
"""

import torch
import torch.nn.functional as F
from pydantic import Field

from trainer.architectures import Network
from trainer.augment import Augmentation, ColourAugmentation, augment, colour_augment
from trainer.methods.adaptation import AdaptParams, Step, adapt, ramp
from trainer.run import RunContext, TrainResult


class Params(AdaptParams, Augmentation, ColourAugmentation):
    threshold: float = Field(
        0.95, gt=0, le=1, description="A target prediction's confidence to be a pseudo-label."
    )


def pseudo_labels(
    source_logits: torch.Tensor, target_logits: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's predicted classes after distribution alignment (its probabilities scaled
    by the source batch's mean prediction over the target batch's), and 1 where they are
    confident enough, else 0."""
    source, target = source_logits.softmax(1), target_logits.softmax(1)
    aligned = target * source.mean(0) / target.mean(0)
    confidence, classes = (aligned / aligned.sum(1, keepdim=True)).max(1)
    return classes, (confidence >= threshold).float()


def run(ctx: RunContext, params: Params) -> TrainResult:

    def make_domain_loss(model: Network, generator: torch.Generator):

        def loss(step: Step) -> torch.Tensor:
            with torch.no_grad():
                target_logits = model.head(step.target_features).float()
                labels, confident = pseudo_labels(
                    step.source_logits, target_logits, params.threshold
                )
            recoloured = colour_augment(step.target_inputs, params, generator)
            strong = augment(model.normalize(recoloured), params, generator)
            logits = model.head(model.backbone(strong)).float()
            per_image = F.cross_entropy(logits, labels, reduction="none")
            return ramp(step.progress) * (per_image * confident).mean()

        return loss, None

    return adapt(ctx, params.weight, make_domain_loss, adabn=params.adabn)

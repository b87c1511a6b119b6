"""Res5 ROI head with an extra norm after res5, as used by MoCo for detection transfer."""

from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """Res5ROIHeads whose res5 stage ends with one more norm layer (``res5.norm``).

    In the MoCo paper the pre-trained features are fine-tuned with BN everywhere (SyncBN across
    GPUs); the C4 box head has no norm between res5 and the box predictor, so one is added.
    The layer uses ``TRANSFER.EXTRA_NORM`` (``MODEL.RESNETS.NORM`` when empty) and the res5
    output width; it is not part of a converted backbone and starts from the norm's own
    initialisation.
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        """Build res5 as in Res5ROIHeads and append the norm.

        Args:
            cfg (CfgNode): the model config.

        Returns:
            tuple[nn.Sequential, int]: the res5 stage (blocks "0".."2" then "norm") and its
            output channels.
        """
        seq, out_channels = super()._build_res5_block(cfg)
        norm = cfg.get("TRANSFER", {}).get("EXTRA_NORM", "") or cfg.MODEL.RESNETS.NORM
        seq.add_module("norm", get_norm(norm, out_channels))
        return seq, out_channels

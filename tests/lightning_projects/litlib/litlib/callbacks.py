from pytorch_lightning import Callback
from pytorch_lightning.utilities import grad_norm
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_only


class EpochCounter(Callback):
    """Records the finished epochs as the fit loop counts them."""

    def __init__(self) -> None:
        self.completed: list[int] = []

    @rank_zero_only
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.completed.append(trainer.current_epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        self.total = trainer.fit_loop.epoch_progress.current.completed
        rank_zero_info(f"EpochCounter: {self.total} epochs")


class GradNormLogger(Callback):
    def __init__(self, norm_type: float = 2.0) -> None:
        if norm_type <= 0:
            raise MisconfigurationException(f"norm_type must be > 0, got {norm_type}")
        self.norm_type = norm_type

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        pl_module.log_dict(grad_norm(pl_module, norm_type=self.norm_type))

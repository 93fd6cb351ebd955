"""The Trainer of the ``gemini-pl`` command line: Lightning's, with batch limits read as written."""

from typing import Union

import lightning as L

__all__ = ["Trainer"]

#: an int counts batches, a float is a fraction of them (Lightning's meaning)
BatchLimit = Union[int, float, None]


class Trainer(L.Trainer):
    """Lightning's :class:`~lightning.pytorch.Trainer`, with ``limit_{train,val,test,predict}_batches``
    and ``overfit_batches`` annotated int-first, so that the command line and config files read
    ``limit_val_batches: 1`` as one batch, as Lightning means an int.

    Lightning annotates them ``Union[float, int, None]`` and jsonargparse takes the first type that
    parses: ``1`` became ``1.0``, i.e. 100 % of the batches (larger integers were unaffected: Lightning
    turns 40.0 back into 40). Here ``1`` is one batch, ``1.0`` and ``0.25`` are fractions. Everything
    else is Lightning's own."""

    def __init__(  # noqa: D417 - the other arguments are Lightning's (gemini-pl fit --help)
        self,
        *,
        limit_train_batches: BatchLimit = None,
        limit_val_batches: BatchLimit = None,
        limit_test_batches: BatchLimit = None,
        limit_predict_batches: BatchLimit = None,
        overfit_batches: Union[int, float] = 0.0,
        **kwargs,
    ) -> None:
        """
        Args:
            limit_train_batches: training batches per epoch: an int counts them, a float is a fraction (default all)
            limit_val_batches: validation batches per run: int count or float fraction (default all)
            limit_test_batches: test batches: int count or float fraction (default all)
            limit_predict_batches: prediction batches: int count or float fraction (default all)
            overfit_batches: train and validate on this many training batches (int) or this fraction (float); 0 off
        """
        super().__init__(limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                         limit_test_batches=limit_test_batches, limit_predict_batches=limit_predict_batches,
                         overfit_batches=overfit_batches, **kwargs)

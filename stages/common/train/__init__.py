"""The one training runtime shared by ``recover`` and ``unlearn``.

A stage builds a :class:`~stages.common.train.loop.TrainTask` (model, loss
function, tokenized examples, keep-masks, a finalizer) and hands it to
:func:`~stages.common.train.launch.execute`, which runs it in-process or under
the DeepSpeed launcher. Losses are plain functions passed in, not subclasses.
Nothing heavy is imported here.
"""

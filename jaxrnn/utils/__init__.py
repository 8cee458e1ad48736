"""Utilities mirroring ``torch.nn.utils``: :mod:`jaxrnn.utils.rnn` (packed sequences)."""

from jaxrnn.utils import rnn as rnn

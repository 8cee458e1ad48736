"""jaxrnn: PyTorch-exact RNN, LSTM and GRU layers for JAX, as Flax NNX and Linen modules.

The NNX modules live at the top level, the Linen twins in :mod:`jaxrnn.linen`, the pure
functional core in :mod:`jaxrnn.functional`.
"""

from jaxrnn import functional as functional
from jaxrnn import linen as linen
from jaxrnn._xla import cpu_compiler_options as cpu_compiler_options
from jaxrnn.convert import from_torch as from_torch
from jaxrnn.convert import params_to_state_dict as params_to_state_dict
from jaxrnn.convert import state_dict_to_params as state_dict_to_params
from jaxrnn.convert import to_torch as to_torch
from jaxrnn.convert import to_torch_tensors as to_torch_tensors
from jaxrnn.io import RecurrentLayer as RecurrentLayer
from jaxrnn.io import find_recurrent_layers as find_recurrent_layers
from jaxrnn.io import load_state_dict_file as load_state_dict_file
from jaxrnn.io import module_from_state_dict as module_from_state_dict
from jaxrnn.io import recurrent_layer as recurrent_layer
from jaxrnn.io import save_state_dict_file as save_state_dict_file
from jaxrnn.nnx import GRU as GRU
from jaxrnn.nnx import LSTM as LSTM
from jaxrnn.nnx import RNN as RNN
from jaxrnn.nnx import GRUCell as GRUCell
from jaxrnn.nnx import LSTMCell as LSTMCell
from jaxrnn.nnx import RNNBase as RNNBase
from jaxrnn.nnx import RNNCell as RNNCell
from jaxrnn.nnx import RNNCellBase as RNNCellBase

__version__ = "0.1.0"

"""The pure functional core: cell steps and the layer driver over torch-named pytrees.

Everything here is a pure function of arrays and plain dicts keyed by torch's parameter names;
the NNX and Linen modules only hold parameters and call into this package.
"""

from jaxrnn.functional._cells import cell as cell
from jaxrnn.functional._cells import gru_cell as gru_cell
from jaxrnn.functional._cells import linear as linear
from jaxrnn.functional._cells import lstm_cell as lstm_cell
from jaxrnn.functional._cells import rnn_relu_cell as rnn_relu_cell
from jaxrnn.functional._cells import rnn_tanh_cell as rnn_tanh_cell
from jaxrnn.functional._cells import step_from_gates as step_from_gates
from jaxrnn.functional._layers import cell_forward as cell_forward
from jaxrnn.functional._layers import dropout_layer as dropout_layer
from jaxrnn.functional._layers import gru as gru
from jaxrnn.functional._layers import lstm as lstm
from jaxrnn.functional._layers import rnn as rnn
from jaxrnn.functional._layers import rnn_relu as rnn_relu
from jaxrnn.functional._layers import rnn_tanh as rnn_tanh
from jaxrnn.functional._layers import scan_direction as scan_direction

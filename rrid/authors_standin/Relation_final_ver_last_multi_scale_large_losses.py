"""Stand-in for the authors' model module: ``RelationModel`` with their attribute names.

Written from the facts in issue 11 and official-code-notes.md. For each scale n in (6, 4, 2),
with p_i the max over stripe i (exact slices of int(H/n) rows, as their code slices), every
reduction a Sequential(Conv1x1 with bias, BN, ReLU) and i counted from 0:

    local_{n}_conv_list[i]        p_i -> p̄_i          fc_local_{n}_list[i]        on p̄_i
    rest_{n}_conv_list[i]         r_i -> r̄_i          fc_rest_{n}_list[i]         on r̄_i
    relation_{n}_conv_list[i]     R_p: q_i = p̄_i + R_p(T(p̄_i, r̄_i))   fc_local_rest_{n}_list[i] on q_i
    global_{n}_max_conv_list[0]   p_max -> p̄_max       fc_global_max_{n}_list[0]   on p̄_max
    global_{n}_rest_conv_list[0]  p_cont -> p̄_cont     fc_global_rest_{n}_list[0]  on p̄_cont
    global_{n}_pooling_conv_list[0]  R_g: q_0 = p̄_max + R_g(T(p̄_max, p̄_cont))   fc_global_{n}_list[0] on q_0

with r_i = (sum_j p_j - p_i)/(n-1), p_max the max over the whole map and
p_cont = (sum_i p_i - p_max)/(n-1). ``forward`` returns (features, logits): the 15 features
in the order q_1..q_6 of P6, q_1..q_4 of P4, q_1..q_2 of P2, q_0 of P6, P4, P2, and the 45
classifier outputs.
"""

import torch
from torch import nn

import resnet

SCALES = (6, 4, 2)


def _reduction(in_channels, out_channels):
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=1),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


def _reductions(count, in_channels, out_channels):
    return nn.ModuleList([_reduction(in_channels, out_channels) for _ in range(count)])


def _classifiers(count, in_features, num_classes):
    return nn.ModuleList([nn.Linear(in_features, num_classes) for _ in range(count)])


class RelationModel(nn.Module):
    def __init__(self, num_classes=751, reduced_dim=256, last_stride=1):
        super().__init__()
        self.base = resnet.resnet50(last_stride)
        C, c = 2048, reduced_dim
        for n in SCALES:
            setattr(self, f"local_{n}_conv_list", _reductions(n, C, c))
            setattr(self, f"rest_{n}_conv_list", _reductions(n, C, c))
            setattr(self, f"relation_{n}_conv_list", _reductions(n, 2 * c, c))
            setattr(self, f"global_{n}_max_conv_list", _reductions(1, C, c))
            setattr(self, f"global_{n}_rest_conv_list", _reductions(1, C, c))
            setattr(self, f"global_{n}_pooling_conv_list", _reductions(1, 2 * c, c))
            setattr(self, f"fc_local_rest_{n}_list", _classifiers(n, c, num_classes))
            setattr(self, f"fc_local_{n}_list", _classifiers(n, c, num_classes))
            setattr(self, f"fc_rest_{n}_list", _classifiers(n, c, num_classes))
            for kind in ("global", "global_max", "global_rest"):
                setattr(self, f"fc_{kind}_{n}_list", _classifiers(1, c, num_classes))

    def layers(self, name, n):
        return getattr(self, name.format(n=n))

    def forward(self, x):
        x = self.base(x)
        H = x.size(2)
        local_feats, global_feats, logits = [], [], []
        for n in SCALES:
            h = H // n
            p = [x[:, :, i * h:(i + 1) * h].amax(dim=(2, 3), keepdim=True) for i in range(n)]
            total = sum(p)
            for i in range(n):
                rest = (total - p[i]) / (n - 1)
                p_bar = self.layers("local_{n}_conv_list", n)[i](p[i])
                r_bar = self.layers("rest_{n}_conv_list", n)[i](rest)
                q = p_bar + self.layers("relation_{n}_conv_list", n)[i](torch.cat([p_bar, r_bar], 1))
                local_feats.append(q.flatten(1))
                logits += [self.layers("fc_local_rest_{n}_list", n)[i](q.flatten(1)),
                           self.layers("fc_local_{n}_list", n)[i](p_bar.flatten(1)),
                           self.layers("fc_rest_{n}_list", n)[i](r_bar.flatten(1))]
            p_max = x.amax(dim=(2, 3), keepdim=True)
            p_cont = (total - p_max) / (n - 1)
            p_bar_max = self.layers("global_{n}_max_conv_list", n)[0](p_max)
            p_bar_cont = self.layers("global_{n}_rest_conv_list", n)[0](p_cont)
            q0 = p_bar_max + self.layers("global_{n}_pooling_conv_list", n)[0](torch.cat([p_bar_max, p_bar_cont], 1))
            global_feats.append(q0.flatten(1))
            logits += [self.layers("fc_global_{n}_list", n)[0](q0.flatten(1)),
                       self.layers("fc_global_max_{n}_list", n)[0](p_bar_max.flatten(1)),
                       self.layers("fc_global_rest_{n}_list", n)[0](p_bar_cont.flatten(1))]
        return local_feats + global_feats, logits

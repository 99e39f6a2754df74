// SGD (with momentum and weight decay) in one pass per parameter.
#pragma once

namespace torch::optim {
class Optimizer;
}

namespace dtrain {

/// If `optimizer` is torch::optim::SGD without Nesterov or dampening and every parameter is a
/// contiguous CPU float tensor, applies its step in one pass per parameter (torch's step makes
/// three: buf.mul_, buf.add_, p.add_) keeping the same state (the momentum buffers in the
/// optimizer's state map, so checkpoints are unchanged) and returns true. Otherwise does
/// nothing and returns false (call optimizer.step()).
bool fused_sgd_step(torch::optim::Optimizer& optimizer);

}  // namespace dtrain

// Umbrella header of dtrain_distributed.
#pragma once

#include "distributed/allreduce_sync.h"
#include "distributed/communicator.h"
#include "distributed/strategy.h"
#include "distributed/tf_config.h"

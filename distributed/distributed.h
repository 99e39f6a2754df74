// Umbrella header of dtrain_distributed.
#pragma once

#include "distributed/strategy.h"

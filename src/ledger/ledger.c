#include "ringway/common.h"

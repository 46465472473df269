#include "cvfio.h"

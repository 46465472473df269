#ifndef MIGLAB_CPCI_SHIM_H
#define MIGLAB_CPCI_SHIM_H
#include <pci/pci.h>
#endif

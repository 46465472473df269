#ifndef MIGLAB_CLIBVIRT_SHIM_H
#define MIGLAB_CLIBVIRT_SHIM_H
#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>
#endif

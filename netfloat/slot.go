package netfloat

import "strconv"

// The services of a host each hold their floating IPs under a slot of
// their own (0 to MaxSlots-1, their place in the configuration's
// services): the address mark (SlotProtocol, SlotLabel) and the kernel
// lease's nftables objects (SlotName) are the slot's, so that one
// service's node manager, fence or crash release never touches another's
// addresses or lease. Slot 0 is named and marked as before there were
// services: a host with one service is unchanged.
const MaxSlots = 4

// SlotProtocol is the IFA_PROTO mark of the addresses of slot.
func SlotProtocol(slot int) uint8 { return DefaultProtocol + uint8(slot) }

// SlotLabel is the IPv4 label (after "<ifname>:") of the addresses of
// slot.
func SlotLabel(slot int) string {
	if slot == 0 {
		return DefaultLabel
	}
	return DefaultLabel + strconv.Itoa(slot)
}

// SlotName is the name of the kernel lease's set or chain base for slot:
// base itself for slot 0, base_s<slot> for the others.
func SlotName(base string, slot int) string {
	if slot == 0 {
		return base
	}
	return base + "_s" + strconv.Itoa(slot)
}

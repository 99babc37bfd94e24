//! The part of an i8042 keyboard controller a `reboot=k` guest needs: writing the pulse-reset
//! command 0xFE to port 0x64 resets the guest.
//!
//! The status register always reads "output buffer full, input buffer empty" (0x01): the
//! kernel's `kb_wait()` before the reset command returns at once (input buffer empty), and the
//! i8042 driver's probe drains 16 bytes, concludes "No controller found" and gives up in
//! microseconds instead of timing out for seconds on a controller that never answers.

use super::Action;

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Command/status port.
pub const COMMAND_PORT: u16 = 0x64;
/// "Pulse output line 0" = CPU reset.
pub const CMD_RESET_CPU: u8 = 0xfe;
/// Status: output buffer full (bit 0); bit 1 (input buffer full) stays clear.
pub const STATUS_OBF: u8 = 0x01;

/// Reads of the controller's ports; `None` for other ports.
pub fn read(port: u16) -> Option<u8> {
    match port {
        DATA_PORT => Some(0),
        COMMAND_PORT => Some(STATUS_OBF),
        _ => None,
    }
}

/// Writes; only the reset command does anything.
pub fn write(port: u16, data: &[u8]) -> Action {
    if port == COMMAND_PORT && data.first() == Some(&CMD_RESET_CPU) {
        Action::Reset
    } else {
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_only_on_fe_to_0x64() {
        assert_eq!(write(0x64, &[0xfe]), Action::Reset);
        assert_eq!(write(0x64, &[0xfe, 0]), Action::Reset);
        assert_eq!(write(0x60, &[0xfe]), Action::Continue);
        assert_eq!(write(0x64, &[0xfd]), Action::Continue);
        assert_eq!(write(0x64, &[]), Action::Continue);
        assert_eq!(read(0x64), Some(STATUS_OBF));
        assert_eq!(read(0x64).unwrap() & 0x02, 0, "kb_wait() needs IBF clear");
        assert_eq!(read(0x60), Some(0));
        assert_eq!(read(0x61), None);
    }
}

use core::fmt;

/// Why a received sync message is dropped from some point on.
///
/// Mirrors a Linux 6.1 backup (`ip_vs_process_message`, `ip_vs_proc_sync_conn`,
/// `ip_vs_process_message_v0`): entries before the failing one stay applied,
/// it and everything after it are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// Datagram shorter than the 4-byte v0 header.
    HeaderTruncated,
    /// Header `size` differs from the datagram length.
    SizeMismatch,
    /// Datagram longer than the receiver's `sync_maxlen`: the kernel's receive
    /// buffer truncates it, and the size check then drops it.
    Oversize,
    /// Fewer bytes left than the fixed part of an entry (v1: 36, v0: 24).
    EntryTruncated,
    /// A v1 entry's size runs past the end of the message.
    EntryOverrun,
    /// A v1 entry's version nibble is not 0.
    EntryVersion,
    /// A v1 entry type other than 0 (IPv4) or bit 0 set (IPv6).
    EntryType,
    /// A v1 entry's size is smaller than its fixed part.
    EntryTooShort,
    /// An option header does not fit in the entry.
    OptionTruncated,
    /// An option of length 0, or longer than the rest of the entry.
    OptionLength,
    /// SEQ_DATA not 24 bytes long, or given twice.
    SeqOption,
    /// PE_DATA or PE_NAME given twice, or a PE name longer than 16 bytes.
    PeOption,
    /// v0: IN_SEQ/OUT_SEQ set but the 24-byte sequence block is missing.
    SeqTruncated,
}

impl Error {
    /// Every variant, for counters indexed by reason.
    pub const ALL: [Error; 13] = [
        Error::HeaderTruncated,
        Error::SizeMismatch,
        Error::Oversize,
        Error::EntryTruncated,
        Error::EntryOverrun,
        Error::EntryVersion,
        Error::EntryType,
        Error::EntryTooShort,
        Error::OptionTruncated,
        Error::OptionLength,
        Error::SeqOption,
        Error::PeOption,
        Error::SeqTruncated,
    ];

    /// A stable identifier, for counters and JSON.
    pub fn reason(self) -> &'static str {
        match self {
            Error::HeaderTruncated => "header_truncated",
            Error::SizeMismatch => "size_mismatch",
            Error::Oversize => "oversize",
            Error::EntryTruncated => "entry_truncated",
            Error::EntryOverrun => "entry_overrun",
            Error::EntryVersion => "entry_version",
            Error::EntryType => "entry_type",
            Error::EntryTooShort => "entry_too_short",
            Error::OptionTruncated => "option_truncated",
            Error::OptionLength => "option_length",
            Error::SeqOption => "seq_option",
            Error::PeOption => "pe_option",
            Error::SeqTruncated => "seq_truncated",
        }
    }

    /// Index into [`Error::ALL`].
    pub fn index(self) -> usize {
        Error::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::HeaderTruncated => "datagram shorter than a sync header",
            Error::SizeMismatch => "header size differs from datagram length",
            Error::Oversize => "datagram longer than the receive limit",
            Error::EntryTruncated => "too few bytes left for an entry",
            Error::EntryOverrun => "entry size runs past the message end",
            Error::EntryVersion => "unknown entry version",
            Error::EntryType => "unknown entry type",
            Error::EntryTooShort => "entry size smaller than its fixed part",
            Error::OptionTruncated => "option header truncated",
            Error::OptionLength => "bad option length",
            Error::SeqOption => "bad or duplicate sequence option",
            Error::PeOption => "bad or duplicate persistence-engine option",
            Error::SeqTruncated => "sequence block truncated",
        })
    }
}

impl std::error::Error for Error {}

/// Why one entry is ignored while the rest of its message is still processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SkipReason {
    /// An option type the backup does not know, without the optional (0x40) bit.
    UnknownMandatoryOption,
    /// A non-template entry whose protocol IPVS has no handler for.
    UnsupportedProtocol,
    /// A non-template entry whose state is beyond its protocol's state table.
    InvalidState,
    /// PE_DATA without PE_NAME.
    PeDataWithoutName,
    /// A persistence engine the backup does not have loaded.
    UnknownPe,
}

impl SkipReason {
    pub const ALL: [SkipReason; 5] = [
        SkipReason::UnknownMandatoryOption,
        SkipReason::UnsupportedProtocol,
        SkipReason::InvalidState,
        SkipReason::PeDataWithoutName,
        SkipReason::UnknownPe,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            SkipReason::UnknownMandatoryOption => "unknown_mandatory_option",
            SkipReason::UnsupportedProtocol => "unsupported_protocol",
            SkipReason::InvalidState => "invalid_state",
            SkipReason::PeDataWithoutName => "pe_data_without_name",
            SkipReason::UnknownPe => "unknown_pe",
        }
    }

    pub fn index(self) -> usize {
        SkipReason::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::UnknownMandatoryOption => "unknown mandatory option",
            SkipReason::UnsupportedProtocol => "unsupported protocol",
            SkipReason::InvalidState => "invalid state",
            SkipReason::PeDataWithoutName => "PE data without PE name",
            SkipReason::UnknownPe => "persistence engine not loaded",
        })
    }
}

/// Why a connection cannot be put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// caddr, vaddr and daddr are not all of one address family.
    MixedFamilies,
    /// v0 carries IPv4 only.
    Ipv6InV0,
    /// v0 cannot carry options other than the sequence block.
    OptionInV0,
    /// An option longer than 255 bytes, or empty.
    OptionLength,
    /// Entry larger than the 12-bit v1 size field allows.
    EntryTooLarge,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncodeError::MixedFamilies => "addresses of different families in one entry",
            EncodeError::Ipv6InV0 => "sync version 0 cannot carry IPv6 connections",
            EncodeError::OptionInV0 => "sync version 0 carries no options but the sequence block",
            EncodeError::OptionLength => "option data must be 1..=255 bytes",
            EncodeError::EntryTooLarge => "entry larger than 4095 bytes",
        })
    }
}

impl std::error::Error for EncodeError {}

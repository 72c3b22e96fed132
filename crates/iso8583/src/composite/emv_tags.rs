//! Names of the EMV data objects met in field 55 and in card and terminal
//! data, as EMV 4.3 Book 3 Annex A names them (with a few from the payment
//! networks' contactless and domestic specifications), for display only: the
//! decoder accepts any well-formed tag. Tags marked sensitive carry card data
//! (the card number, track data, the cardholder's name) and are masked in every
//! human-readable output unless asked otherwise.

/// One known tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmvTag {
    /// The tag's bytes.
    pub tag: &'static [u8],
    pub name: &'static str,
    pub sensitive: bool,
}

const fn tag(tag: &'static [u8], name: &'static str) -> EmvTag {
    EmvTag {
        tag,
        name,
        sensitive: false,
    }
}

const fn card_data(tag: &'static [u8], name: &'static str) -> EmvTag {
    EmvTag {
        tag,
        name,
        sensitive: true,
    }
}

/// The dictionary, in tag order.
pub const EMV_TAGS: &[EmvTag] = &[
    tag(&[0x42], "Issuer Identification Number (IIN)"),
    tag(&[0x4F], "Application Identifier (AID) - card"),
    tag(&[0x50], "Application Label"),
    card_data(&[0x56], "Track 1 Data"),
    card_data(&[0x57], "Track 2 Equivalent Data"),
    card_data(&[0x5A], "Application Primary Account Number (PAN)"),
    card_data(&[0x5F, 0x20], "Cardholder Name"),
    tag(&[0x5F, 0x24], "Application Expiration Date"),
    tag(&[0x5F, 0x25], "Application Effective Date"),
    tag(&[0x5F, 0x28], "Issuer Country Code"),
    tag(&[0x5F, 0x2A], "Transaction Currency Code"),
    tag(&[0x5F, 0x2D], "Language Preference"),
    tag(&[0x5F, 0x30], "Service Code"),
    tag(&[0x5F, 0x34], "Application PAN Sequence Number"),
    tag(&[0x5F, 0x36], "Transaction Currency Exponent"),
    tag(&[0x61], "Application Template"),
    tag(&[0x6F], "File Control Information (FCI) Template"),
    tag(&[0x70], "READ RECORD Response Message Template"),
    tag(&[0x71], "Issuer Script Template 1"),
    tag(&[0x72], "Issuer Script Template 2"),
    tag(&[0x77], "Response Message Template Format 2"),
    tag(&[0x80], "Response Message Template Format 1"),
    tag(&[0x82], "Application Interchange Profile"),
    tag(&[0x84], "Dedicated File (DF) Name"),
    tag(&[0x86], "Issuer Script Command"),
    tag(&[0x87], "Application Priority Indicator"),
    tag(&[0x88], "Short File Identifier (SFI)"),
    tag(&[0x89], "Authorisation Code"),
    tag(&[0x8A], "Authorisation Response Code"),
    tag(&[0x8C], "Card Risk Management Data Object List 1 (CDOL1)"),
    tag(&[0x8D], "Card Risk Management Data Object List 2 (CDOL2)"),
    tag(&[0x8E], "Cardholder Verification Method (CVM) List"),
    tag(&[0x8F], "Certification Authority Public Key Index"),
    tag(&[0x91], "Issuer Authentication Data"),
    tag(&[0x94], "Application File Locator (AFL)"),
    tag(&[0x95], "Terminal Verification Results"),
    tag(&[0x9A], "Transaction Date"),
    tag(&[0x9B], "Transaction Status Information"),
    tag(&[0x9C], "Transaction Type"),
    tag(&[0x9F, 0x01], "Acquirer Identifier"),
    tag(&[0x9F, 0x02], "Amount, Authorised (Numeric)"),
    tag(&[0x9F, 0x03], "Amount, Other (Numeric)"),
    tag(&[0x9F, 0x06], "Application Identifier (AID) - terminal"),
    tag(&[0x9F, 0x07], "Application Usage Control"),
    tag(&[0x9F, 0x08], "Application Version Number - card"),
    tag(&[0x9F, 0x09], "Application Version Number - terminal"),
    tag(&[0x9F, 0x0D], "Issuer Action Code - Default"),
    tag(&[0x9F, 0x0E], "Issuer Action Code - Denial"),
    tag(&[0x9F, 0x0F], "Issuer Action Code - Online"),
    tag(&[0x9F, 0x10], "Issuer Application Data"),
    tag(&[0x9F, 0x11], "Issuer Code Table Index"),
    tag(&[0x9F, 0x12], "Application Preferred Name"),
    tag(&[0x9F, 0x15], "Merchant Category Code"),
    tag(&[0x9F, 0x16], "Merchant Identifier"),
    tag(
        &[0x9F, 0x17],
        "Personal Identification Number (PIN) Try Counter",
    ),
    tag(&[0x9F, 0x1A], "Terminal Country Code"),
    tag(&[0x9F, 0x1C], "Terminal Identification"),
    tag(&[0x9F, 0x1E], "Interface Device (IFD) Serial Number"),
    card_data(&[0x9F, 0x1F], "Track 1 Discretionary Data"),
    card_data(&[0x9F, 0x20], "Track 2 Discretionary Data"),
    tag(&[0x9F, 0x21], "Transaction Time"),
    tag(&[0x9F, 0x26], "Application Cryptogram"),
    tag(&[0x9F, 0x27], "Cryptogram Information Data"),
    tag(&[0x9F, 0x33], "Terminal Capabilities"),
    tag(
        &[0x9F, 0x34],
        "Cardholder Verification Method (CVM) Results",
    ),
    tag(&[0x9F, 0x35], "Terminal Type"),
    tag(&[0x9F, 0x36], "Application Transaction Counter (ATC)"),
    tag(&[0x9F, 0x37], "Unpredictable Number"),
    tag(&[0x9F, 0x39], "Point-of-Service (POS) Entry Mode"),
    tag(&[0x9F, 0x40], "Additional Terminal Capabilities"),
    tag(&[0x9F, 0x41], "Transaction Sequence Counter"),
    tag(&[0x9F, 0x42], "Application Currency Code"),
    tag(&[0x9F, 0x4C], "ICC Dynamic Number"),
    tag(&[0x9F, 0x53], "Transaction Category Code"),
    tag(&[0x9F, 0x5B], "Issuer Script Results"),
    tag(&[0x9F, 0x63], "Card Product Identification Information"),
    card_data(&[0x9F, 0x6B], "Track 2 Data"),
    tag(&[0x9F, 0x6E], "Form Factor Indicator / Third Party Data"),
    tag(&[0x9F, 0x7C], "Customer Exclusive Data"),
    tag(&[0xDF, 0x31], "Issuer Script Results (domestic)"),
];

/// The dictionary entry of a tag, if the dictionary knows it.
pub fn lookup(tag: &[u8]) -> Option<&'static EmvTag> {
    EMV_TAGS
        .binary_search_by(|t| t.tag.cmp(tag))
        .ok()
        .map(|i| &EMV_TAGS[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_sorted_for_binary_search() {
        assert!(EMV_TAGS.windows(2).all(|w| w[0].tag < w[1].tag));
    }

    #[test]
    fn common_tags_are_named() {
        assert_eq!(
            lookup(&[0x9F, 0x26]).unwrap().name,
            "Application Cryptogram"
        );
        assert_eq!(
            lookup(&[0x82]).unwrap().name,
            "Application Interchange Profile"
        );
        assert!(lookup(&[0x5A]).unwrap().sensitive);
        assert!(lookup(&[0x9F, 0x99]).is_none());
    }
}

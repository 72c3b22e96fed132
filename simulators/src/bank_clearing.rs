//! A bank's own clearing file, from its journal of decided requests: what a
//! bank back office would produce to reconcile with the switch's file. The
//! bank simulator exports this way (`admin_export`, the admin
//! command `export`).
//!
//! A bank knows the switch's debits and credits by the key the switch gave
//! them (F32/F7/F11 of the request as received) and dates them from that F7
//! with the scheme's cutoff, as the switch does. A reversal answered 00 turns
//! its original into `reversed`; a reversal answered 25 for an original the
//! bank never received stands for it as `not_applied`, and so does one
//! answered 25 for a request declined before the books saw it (a fault's
//! decline, journaled but not remembered): nothing moved either way, and the
//! switch, which may not have seen that answer before a crash, says the same.

use std::collections::BTreeMap;

use chrono::NaiveDate;

use iso8583::response::ResponseCode;
use iso8583::spec::Spec;
use switchboard::clearing::file::{Header, Kind, Line, ParticipantFile, Role, Status};

use switchboard::clearing::{decimal, Settlement};

use crate::bank::{Movement, MovementKind};

/// Splits a movement key `MTI/F32/F7/F11` into its MTI class and `F32/F7/F11`.
fn split_key(request: &str) -> Option<(&str, &str)> {
    let (class, key) = request.split_once('/')?;
    Some((class, key))
}

/// F7 of a key `F32/F7/F11`.
fn transmission_of(key: &str) -> Option<&str> {
    key.split('/').nth(1)
}

fn on_date(key: &str, date: NaiveDate, settlement: &Settlement) -> bool {
    transmission_of(key).and_then(|t| settlement.date_of_transmission(t.as_bytes(), date))
        == Some(date)
}

/// The clearing file of the bank `institution` (11 digits) for settlement
/// day `date`, from its journal. Amounts use the exponents of `spec`'s
/// currencies (2 for a currency it does not list).
pub fn export(
    movements: impl IntoIterator<Item = Movement>,
    institution: &str,
    date: NaiveDate,
    settlement: &Settlement,
    spec: &Spec,
) -> ParticipantFile {
    let exponent = |currency: u16| spec.currency_exponents.get(&currency).copied().unwrap_or(2);
    let mut lines: BTreeMap<String, Line> = BTreeMap::new();
    let mut switch = None;
    // Reversals apply to the lines the debits and credits make, so they
    // are kept aside (a few in a day) and applied after them.
    let mut reversals = Vec::new();
    for m in movements {
        if m.kind == MovementKind::Reversal {
            reversals.push(m);
            continue;
        }
        let kind = match m.kind {
            MovementKind::Debit => Kind::Debit,
            MovementKind::Credit => Kind::Credit,
            _ => continue,
        };
        let Some(("0200", key)) = split_key(&m.request) else {
            continue;
        };
        if !on_date(key, date, settlement) || lines.contains_key(key) {
            continue;
        }
        switch.get_or_insert_with(|| key.split('/').next().unwrap_or("").to_string());
        let currency = m.currency.unwrap_or(156);
        let amount = decimal(m.amount_minor, exponent(currency));
        let status = if m.response_code == ResponseCode::APPROVED {
            Status::Approved
        } else {
            Status::Declined
        };
        lines.insert(
            key.to_string(),
            Line {
                kind,
                key: key.to_string(),
                freeze: m.hold.clone().unwrap_or_default(),
                pan: m.pan.clone(),
                currency,
                amount,
                response_code: m.response_code.clone(),
                reversal: String::new(),
                status,
                settled: Line::settled_for(status, amount),
            },
        );
    }
    for m in reversals {
        let Some(("0200", key)) = m.original.as_deref().and_then(split_key) else {
            continue;
        };
        if !on_date(key, date, settlement) {
            continue;
        }
        match lines.get_mut(key) {
            Some(line) => {
                if line.reversal.is_empty() || m.response_code == ResponseCode::APPROVED {
                    line.reversal = m.response_code.clone();
                }
                if m.response_code == ResponseCode::APPROVED {
                    line.status = Status::Reversed;
                } else if m.response_code == ResponseCode::UNABLE_TO_LOCATE_RECORD
                    && line.status == Status::Declined
                {
                    // Declined ahead of the books (a fault answered it): the
                    // books never had it, as the reversal's 25 says.
                    line.status = Status::NotApplied;
                }
            }
            None if m.response_code == ResponseCode::UNABLE_TO_LOCATE_RECORD => {
                let kind = match m.processing_code.as_deref() {
                    Some("000000") => Kind::Debit,
                    Some("260000") => Kind::Credit,
                    _ => continue,
                };
                let currency = m.currency.unwrap_or(156);
                lines.insert(
                    key.to_string(),
                    Line {
                        kind,
                        key: key.to_string(),
                        freeze: String::new(),
                        pan: m.pan.clone(),
                        currency,
                        amount: decimal(m.amount_minor, exponent(currency)),
                        response_code: String::new(),
                        reversal: m.response_code.clone(),
                        status: Status::NotApplied,
                        settled: Default::default(),
                    },
                );
            }
            None => {}
        }
    }
    let mut file = ParticipantFile::new(Header {
        role: Role::Bank,
        participant: institution.to_string(),
        date,
        cutoff: settlement.cutoff_text(),
        time_zone: settlement.time_zone.to_string(),
        switch: switch.unwrap_or_else(|| "0".repeat(11)),
    });
    file.lines = lines
        .into_values()
        .map(|mut line| {
            line.settled = Line::settled_for(line.status, line.amount);
            line
        })
        .collect();
    file.sort();
    file
}

/// The admin port's `export YYYY-MM-DD [HH:MM [ZONE]]`: the bank's file and
/// an empty line, or one JSON line `{"error": ...}`.
pub fn admin_export(bank: &crate::bank::Bank, args: &str) -> String {
    let mut words = args.split_whitespace();
    let default = Settlement::default();
    let date = words
        .next()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let cutoff = words
        .next()
        .map(str::to_string)
        .unwrap_or(default.cutoff_text());
    let zone = words
        .next()
        .map(str::to_string)
        .unwrap_or(default.time_zone.to_string());
    let error = |e: String| format!("{}\n", serde_json::json!({ "error": e }));
    let Some(date) = date else {
        return error("usage: export YYYY-MM-DD [HH:MM [ZONE]]".into());
    };
    match Settlement::parse(&cutoff, &zone) {
        Ok(settlement) => format!(
            "{}\n",
            export(
                bank.movements(),
                bank.institution().as_str(),
                date,
                &settlement,
                bank.spec()
            )
            .render()
        ),
        Err(e) => error(e.0),
    }
}

/// Asks a bank simulator's admin port (`addr`) for its clearing file of
/// `date`: what `banksim export` prints.
pub async fn fetch_export(
    addr: &str,
    date: NaiveDate,
    settlement: &Settlement,
) -> std::io::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (read, mut write) = stream.into_split();
    write
        .write_all(
            format!(
                "export {} {} {}\n",
                date.format("%Y-%m-%d"),
                settlement.cutoff_text(),
                settlement.time_zone
            )
            .as_bytes(),
        )
        .await?;
    let mut lines = BufReader::new(read).lines();
    let mut out = String::new();
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() {
            return Ok(out);
        }
        if out.is_empty() && line.starts_with('{') {
            return Err(std::io::Error::other(format!("{addr}: {line}")));
        }
        out.push_str(&line);
        out.push('\n');
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("{addr}: the export ended early"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn movement(kind: MovementKind, request: &str, code: &str) -> Movement {
        Movement {
            seq: 0,
            kind,
            request: request.to_string(),
            hold: None,
            original: None,
            pan: "622202******2783".into(),
            amount_minor: 1_200,
            applied_minor: 0,
            response_code: code.into(),
            time: "2026-11-24T02:00:00".into(),
            processing_code: Some("000000".into()),
            currency: Some(156),
        }
    }

    /// What the reversals answered decides the lines of the debits they name.
    #[test]
    fn a_reversal_answered_25_makes_its_original_not_applied() {
        let key = |stan: &str| format!("00000010000/1124020000/{stan}");
        let reversal = |original: &str, stan: &str, code: &str| Movement {
            original: Some(format!("0200/{}", key(original))),
            ..movement(MovementKind::Reversal, &format!("0420/{}", key(stan)), code)
        };
        let movements = [
            // Declined ahead of the books (a fault), reversed after a crash: 25.
            movement(
                MovementKind::Debit,
                &format!("0200/{}", key("000001")),
                "96",
            ),
            reversal("000001", "000101", "25"),
            // Never received, reversed: 25.
            reversal("000002", "000102", "25"),
            // Declined by the books and reversed: nothing to undo, 00.
            movement(
                MovementKind::Debit,
                &format!("0200/{}", key("000003")),
                "51",
            ),
            reversal("000003", "000103", "00"),
            // Declined, never reversed.
            movement(
                MovementKind::Debit,
                &format!("0200/{}", key("000004")),
                "51",
            ),
        ];
        let date = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let file = export(
            movements,
            "00048020000",
            date,
            &Settlement::default(),
            &Spec::switchboard(),
        );
        let statuses: Vec<(String, Status, String)> = file
            .lines
            .iter()
            .map(|l| (l.key.clone(), l.status, l.reversal.clone()))
            .collect();
        assert_eq!(
            statuses,
            [
                (key("000001"), Status::NotApplied, "25".to_string()),
                (key("000002"), Status::NotApplied, "25".to_string()),
                (key("000003"), Status::Reversed, "00".to_string()),
                (key("000004"), Status::Declined, String::new()),
            ]
        );
        assert!(file.lines.iter().all(|l| l.settled.is_zero()));
    }
}

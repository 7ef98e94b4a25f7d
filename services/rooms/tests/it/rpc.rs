//! Every rooms RPC and its failures, run against both deployments: real NATS + the
//! MongoDB-wire server, and the in-process bus + memory store.

use crate::support;

use p2piano_protocol::rpc::{JoinReply, LeaveReply, UpdateUserReply};
use p2piano_protocol::validate::PALETTE;
use p2piano_protocol::{ErrorCode, MembersEventKind, Reply, Room, RoomCode, RoomsOp};
use serde_json::json;
use support::{Harness, Mode, uid};

#[p2piano_testkit::both_modes(
    nats = Harness::start(Mode::NatsMongo).await,
    in_process = Harness::start(Mode::InProcess).await,
)]
mod cases {
    use super::*;

    pub async fn create_and_get(h: Harness) {
        let owner = uid();
        let room = create_room(&h, &owner).await;
        assert!(RoomCode::parse(room.code.as_str()).is_ok());
        assert_eq!(room.owner_id.as_str(), owner);
        assert!(room.participants.is_empty());
        assert_eq!(room.settings.max_participants, 8);
        assert!(!room.settings.locked);
        assert_eq!(room.revision, 1);
        let got: Room = h.ok(RoomsOp::Get, json!({"code": room.code})).await;
        assert_eq!(got, room);
    }

    pub async fn create_with_settings_and_bad_input(h: Harness) {
        let room: Room = h
            .ok(
                RoomsOp::Create,
                json!({"ownerId": uid(), "settings": {"name": " Jam ", "maxParticipants": 4, "locked": true}}),
            )
            .await;
        assert_eq!(room.settings.name.as_deref(), Some("Jam"));
        assert_eq!(room.settings.max_participants, 4);
        assert!(room.settings.locked);
        for bad in [
            json!({"ownerId": uid(), "settings": {"maxParticipants": 0}}),
            json!({"ownerId": uid(), "settings": {"maxParticipants": 17}}),
            json!({"ownerId": uid(), "settings": {"colour": "red"}}),
            json!({"ownerId": uid(), "settings": {"name": "x".repeat(51)}}),
            json!({"ownerId": "not-a-uuid"}),
            json!({}),
        ] {
            assert_eq!(
                h.err(RoomsOp::Create, &bad).await,
                ErrorCode::Invalid,
                "{bad}"
            );
        }
    }

    pub async fn get_unknown_and_invalid_codes(h: Harness) {
        assert_eq!(
            h.err(RoomsOp::Get, json!({"code": "zzzzz"})).await,
            ErrorCode::NotFound
        );
        for bad in ["ABCDE", "abcd", "abcdef", "abcd1", ""] {
            assert_eq!(
                h.err(RoomsOp::Get, json!({"code": bad})).await,
                ErrorCode::Invalid,
                "{bad}"
            );
        }
    }

    pub async fn update_settings_only_by_owner(h: Harness) {
        let owner = uid();
        let room = create_room(&h, &owner).await;
        let mut events = h.events().await;
        let not_owner = uid();
        assert_eq!(
            h.err(
                RoomsOp::Update,
                json!({"code": room.code, "by": not_owner, "settings": {"locked": true}})
            )
            .await,
            ErrorCode::Forbidden
        );
        let updated: Room = h
            .ok(
                RoomsOp::Update,
                json!({"code": room.code, "by": owner, "settings": {"locked": true, "name": "Duo"}}),
            )
            .await;
        assert!(updated.settings.locked);
        assert_eq!(updated.settings.name.as_deref(), Some("Duo"));
        assert_eq!(
            updated.settings.max_participants, 8,
            "unchanged fields are kept"
        );
        assert_eq!(updated.revision, 2);
        let ev = events.next().await;
        assert_eq!(ev.kind, MembersEventKind::Settings);
        assert_eq!(ev.room, updated);
        assert_eq!(
            h.err(
                RoomsOp::Update,
                json!({"code": room.code, "by": owner, "settings": {"maxParticipants": 99}})
            )
            .await,
            ErrorCode::Invalid
        );
        assert_eq!(
            h.err(
                RoomsOp::Update,
                json!({"code": "zzzzz", "by": owner, "settings": {}})
            )
            .await,
            ErrorCode::NotFound
        );
        let stored: Room = h.ok(RoomsOp::Get, json!({"code": room.code})).await;
        assert_eq!(stored, updated, "refused updates changed nothing");
    }

    pub async fn join_is_idempotent_and_colors_are_unique(h: Harness) {
        let room = create_room(&h, &uid()).await;
        let mut events = h.events().await;
        let (a, b) = (uid(), uid());
        let ja: JoinReply = h
            .ok(
                RoomsOp::Join,
                json!({"code": room.code, "userId": a, "displayName": "Ada", "instrument": "SYNTH"}),
            )
            .await;
        assert!(!ja.rejoined);
        assert_eq!(ja.user.display_name.as_str(), "Ada");
        assert_eq!(ja.user.color.as_str(), PALETTE[0]);
        let ev = events.next().await;
        assert_eq!(
            (ev.kind, ev.user_id.as_ref().map(|u| u.as_str())),
            (MembersEventKind::Joined, Some(a.as_str()))
        );
        assert_eq!(ev.room, ja.room);

        // Joining again changes nothing, publishes nothing, and says so.
        let again: JoinReply = h
            .ok(
                RoomsOp::Join,
                json!({"code": room.code, "userId": a, "displayName": "Someone else"}),
            )
            .await;
        assert!(again.rejoined);
        assert_eq!(again.room, ja.room);
        assert_eq!(again.user, ja.user);

        let jb: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": b}))
            .await;
        assert_eq!(jb.user.display_name.as_str(), "Anonymous");
        assert_eq!(jb.user.color.as_str(), PALETTE[1]);
        assert_eq!(jb.room.participants.len(), 2);
        // The next event is b's join: the rejoin published nothing in between.
        let ev = events.next().await;
        assert_eq!(ev.user_id.as_ref().map(|u| u.as_str()), Some(b.as_str()));
        assert_eq!(ev.kind, MembersEventKind::Joined);

        // a leaves and c joins: c gets a's freed colour, the first unused one.
        let _: LeaveReply = h
            .ok(RoomsOp::Leave, json!({"code": room.code, "userId": a}))
            .await;
        let jc: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": uid()}))
            .await;
        assert_eq!(jc.user.color.as_str(), PALETTE[0]);
        assert_eq!(
            h.err(RoomsOp::Join, json!({"code": "zzzzz", "userId": a}))
                .await,
            ErrorCode::NotFound
        );
    }

    pub async fn join_uses_profile_defaults(h: Harness) {
        let user = uid();
        let r1 = create_room(&h, &uid()).await;
        let r2 = create_room(&h, &uid()).await;
        let _: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": r1.code, "userId": user, "displayName": "Bea", "instrument": "ELECTRIC_BASS"}))
            .await;
        let j2: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": r2.code, "userId": user}))
            .await;
        assert_eq!(
            j2.user.display_name.as_str(),
            "Bea",
            "profile name carried across rooms"
        );
        assert_eq!(
            serde_json::to_value(j2.user.instrument).unwrap(),
            "ELECTRIC_BASS"
        );
    }

    pub async fn join_refused_when_full_or_locked(h: Harness) {
        let (owner, room, [(a, _), (b, _)]) = full_room_of_two(&h).await;
        assert_eq!(
            h.err(RoomsOp::Join, json!({"code": room.code, "userId": uid()}))
                .await,
            ErrorCode::Full
        );
        // A member may rejoin a full room.
        let again: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": a}))
            .await;
        assert!(again.rejoined);

        let _: Room = h
            .ok(RoomsOp::Update, json!({"code": room.code, "by": owner, "settings": {"locked": true, "maxParticipants": 8}}))
            .await;
        assert_eq!(
            h.err(RoomsOp::Join, json!({"code": room.code, "userId": uid()}))
                .await,
            ErrorCode::Forbidden
        );
        let again: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": b}))
            .await;
        assert!(again.rejoined, "a member may rejoin a locked room");
        let after: Room = h.ok(RoomsOp::Get, json!({"code": room.code})).await;
        assert_eq!(after.participants.len(), 2);
    }

    /// A member's new page: `renew` publishes the member's leave (the room without them) and
    /// then their join (the room with them), in revision order, and keeps their place and
    /// colour, even in a full and locked room.
    pub async fn renew_announces_a_leave_then_a_join(h: Harness) {
        let (owner, room, [(a, ja), _]) = full_room_of_two(&h).await;
        let _: Room = h
            .ok(
                RoomsOp::Update,
                json!({"code": room.code, "by": owner, "settings": {"locked": true}}),
            )
            .await;
        let mut events = h.events().await;
        let renewed: JoinReply = h
            .ok(
                RoomsOp::Join,
                json!({"code": room.code, "userId": a, "renew": true}),
            )
            .await;
        assert!(!renewed.rejoined, "announced as a join");
        assert_eq!(renewed.user, ja.user, "same place, same colour");
        let left = events.next().await;
        let joined = events.next().await;
        assert_eq!(
            (left.kind, left.user_id.as_ref().map(|u| u.as_str())),
            (MembersEventKind::Left, Some(a.as_str()))
        );
        assert!(
            !left.room.is_member(&ja.user.id),
            "the leave shows the room without a"
        );
        assert_eq!(
            (joined.kind, joined.user_id.as_ref().map(|u| u.as_str())),
            (MembersEventKind::Joined, Some(a.as_str()))
        );
        assert!(joined.room.is_member(&ja.user.id));
        assert!(left.room.revision < joined.room.revision);
        assert_eq!(joined.room, renewed.room);
        assert_eq!(renewed.room.participants.len(), 2);
        // Renewing someone who is not a member is a plain join (refused here: locked).
        assert_eq!(
            h.err(
                RoomsOp::Join,
                json!({"code": room.code, "userId": uid(), "renew": true})
            )
            .await,
            ErrorCode::Forbidden
        );
    }

    /// A locked room lets its owner back in, and presence's restore of a member it wrongly
    /// announced as left passes both the lock and the size limit; nobody else gets in.
    pub async fn owner_and_restore_pass_a_lock(h: Harness) {
        let owner = uid();
        let room: Room = h
            .ok(
                RoomsOp::Create,
                json!({"ownerId": owner, "settings": {"maxParticipants": 1, "locked": true}}),
            )
            .await;
        let _: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": owner}))
            .await;
        let stranger = uid();
        assert_eq!(
            h.err(
                RoomsOp::Join,
                json!({"code": room.code, "userId": stranger})
            )
            .await,
            ErrorCode::Forbidden
        );
        let restored: JoinReply = h
            .ok(
                RoomsOp::Join,
                json!({"code": room.code, "userId": stranger, "restore": true}),
            )
            .await;
        assert!(!restored.rejoined);
        assert_eq!(restored.room.participants.len(), 2, "over the limit of 1");
        for who in [&stranger, &owner] {
            let _: LeaveReply = h
                .ok(RoomsOp::Leave, json!({"code": room.code, "userId": who}))
                .await;
        }
        let back: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": owner}))
            .await;
        assert!(!back.rejoined, "the owner came back into the locked room");
    }

    /// A leave decided before the member's current membership began (presence's leave of an
    /// old page, reaching rooms after the same session joined again) changes nothing; one
    /// decided after it removes the member.
    pub async fn a_late_conditional_leave_spares_a_newer_membership(h: Harness) {
        let room = create_room(&h, &uid()).await;
        let a = uid();
        let joined: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": a}))
            .await;
        let at = joined.user.joined_at.millis();
        let before = p2piano_protocol::Timestamp::from_millis(at - 1);
        let late: LeaveReply = h
            .ok(
                RoomsOp::Leave,
                json!({"code": room.code, "userId": a, "joinedBefore": before}),
            )
            .await;
        assert!(!late.left, "the newer membership stays");
        assert!(late.room.is_member(&joined.user.id));
        let after = p2piano_protocol::Timestamp::from_millis(at);
        let due: LeaveReply = h
            .ok(
                RoomsOp::Leave,
                json!({"code": room.code, "userId": a, "joinedBefore": after}),
            )
            .await;
        assert!(due.left);
        assert!(!due.room.is_member(&joined.user.id));
    }

    pub async fn join_validates_input(h: Harness) {
        let room = create_room(&h, &uid()).await;
        for bad in [
            json!({"code": room.code, "userId": uid(), "displayName": "x".repeat(51)}),
            json!({"code": room.code, "userId": uid(), "displayName": "   "}),
            json!({"code": room.code, "userId": uid(), "instrument": "KAZOO"}),
            json!({"code": room.code, "userId": "12345"}),
            json!({"code": "ABCDE", "userId": uid()}),
            json!({"code": room.code}),
        ] {
            assert_eq!(
                h.err(RoomsOp::Join, &bad).await,
                ErrorCode::Invalid,
                "{bad}"
            );
        }
        // 50 characters after trimming is fine.
        let padded = format!("  {}  ", "é".repeat(50));
        let ok: JoinReply = h
            .ok(
                RoomsOp::Join,
                json!({"code": room.code, "userId": uid(), "displayName": padded}),
            )
            .await;
        assert_eq!(ok.user.display_name.as_str().chars().count(), 50);
        let after: Room = h.ok(RoomsOp::Get, json!({"code": room.code})).await;
        assert_eq!(after.participants.len(), 1, "refused joins added nobody");
    }

    pub async fn leave_is_idempotent(h: Harness) {
        let room = create_room(&h, &uid()).await;
        let a = uid();
        let _: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": a}))
            .await;
        let mut events = h.events().await;
        let left: LeaveReply = h
            .ok(RoomsOp::Leave, json!({"code": room.code, "userId": a}))
            .await;
        assert!(left.left);
        assert!(left.room.participants.is_empty());
        let ev = events.next().await;
        assert_eq!(ev.kind, MembersEventKind::Left);
        assert_eq!(ev.user_id.unwrap().as_str(), a);
        // Leaving again, or never having joined, changes nothing and publishes nothing.
        let again: LeaveReply = h
            .ok(RoomsOp::Leave, json!({"code": room.code, "userId": a}))
            .await;
        assert!(!again.left);
        assert_eq!(again.room, left.room);
        let stranger: LeaveReply = h
            .ok(RoomsOp::Leave, json!({"code": room.code, "userId": uid()}))
            .await;
        assert!(!stranger.left);
        let b = uid();
        let _: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": b}))
            .await;
        let ev = events.next().await;
        assert_eq!(
            (ev.kind, ev.user_id.unwrap().as_str().to_owned()),
            (MembersEventKind::Joined, b)
        );
        assert_eq!(
            h.err(RoomsOp::Leave, json!({"code": "zzzzz", "userId": a}))
                .await,
            ErrorCode::NotFound
        );
    }

    pub async fn update_user_changes_member(h: Harness) {
        let room = create_room(&h, &uid()).await;
        let a = uid();
        let _: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": a}))
            .await;
        let mut events = h.events().await;
        let up: UpdateUserReply = h
            .ok(
                RoomsOp::UpdateUser,
                json!({"code": room.code, "userId": a, "displayName": "Cleo", "instrument": "SYNTH", "color": "#abc"}),
            )
            .await;
        assert_eq!(up.user.display_name.as_str(), "Cleo");
        assert_eq!(up.user.color.as_str(), "#abc");
        assert_eq!(up.room.participant(&up.user.id), Some(&up.user));
        let ev = events.next().await;
        assert_eq!(ev.kind, MembersEventKind::Updated);
        assert_eq!(ev.room, up.room);
        for bad in [
            json!({"code": room.code, "userId": a, "color": "red"}),
            json!({"code": room.code, "userId": a, "color": "#12345"}),
            json!({"code": room.code, "userId": a, "displayName": "x".repeat(51)}),
            json!({"code": room.code, "userId": a, "instrument": "KAZOO"}),
        ] {
            assert_eq!(
                h.err(RoomsOp::UpdateUser, &bad).await,
                ErrorCode::Invalid,
                "{bad}"
            );
        }
        assert_eq!(
            h.err(
                RoomsOp::UpdateUser,
                json!({"code": room.code, "userId": uid(), "displayName": "X"})
            )
            .await,
            ErrorCode::NotFound
        );
        // The new name becomes the profile default in other rooms.
        let other = create_room(&h, &uid()).await;
        let j: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": other.code, "userId": a}))
            .await;
        assert_eq!(j.user.display_name.as_str(), "Cleo");
    }

    pub async fn malformed_requests_get_invalid(h: Harness) {
        let join = h.subjects.rooms_rpc(RoomsOp::Join);
        for payload in [
            &b"{not json"[..],
            b"",
            b"[1,2]",
            b"null",
            b"\"join\"",
            b"{\"code\": 5}",
        ] {
            match h.raw(&join, payload.to_vec()).await {
                Reply::Error(e) => assert_eq!(e.code, ErrorCode::Invalid, "{payload:?}"),
                Reply::Ok(v) => panic!("accepted {payload:?}: {v}"),
            }
        }
        let unknown = format!("{}.rpc.rooms.explode", h.subjects.prefix());
        match h.raw(&unknown, b"{}".to_vec()).await {
            Reply::Error(e) => assert_eq!(e.code, ErrorCode::Invalid),
            Reply::Ok(v) => panic!("unknown op answered {v}"),
        }
        // The service is still fine afterwards.
        let _ = create_room(&h, &uid()).await;
    }
}

async fn create_room(h: &Harness, owner: &str) -> Room {
    h.ok(RoomsOp::Create, json!({"ownerId": owner})).await
}

/// A room of at most two, full: its owner, the room, and its two members' ids and join
/// replies.
async fn full_room_of_two(h: &Harness) -> (String, Room, [(String, JoinReply); 2]) {
    let owner = uid();
    let room: Room = h
        .ok(
            RoomsOp::Create,
            json!({"ownerId": owner, "settings": {"maxParticipants": 2}}),
        )
        .await;
    let mut members = Vec::new();
    for _ in 0..2 {
        let id = uid();
        let reply: JoinReply = h
            .ok(RoomsOp::Join, json!({"code": room.code, "userId": id}))
            .await;
        members.push((id, reply));
    }
    let [a, b]: [(String, JoinReply); 2] = members.try_into().expect("two members");
    (owner, room, [a, b])
}

use durable::{ActivityContext, Ctx, Failure, activity, orchestration};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Trip {
    steps: Vec<String>,
    fail_at: usize,
}

#[activity]
async fn book(_ctx: ActivityContext, step: String) -> Result<usize, String> {
    Ok(step.len())
}

// Plain Rust accepts this (the loop moves `trip.steps` only); the macro stores `trip` whole at
// the await, so the partly moved local is reported. Moving the field out first
// (`let steps = trip.steps;`) makes it compile.
#[orchestration]
async fn travel(ctx: Ctx, trip: Trip) -> Result<usize, Failure> {
    let mut booked = 0;
    for step in trip.steps {
        booked += ctx.call(book, step).await?;
        if booked > trip.fail_at {
            break;
        }
    }
    Ok(booked)
}

fn main() {}
